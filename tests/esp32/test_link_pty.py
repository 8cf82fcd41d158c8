"""C (llmos_proto.c via gcc) against Python (protocol.Link) over real socat pty pairs."""

from __future__ import annotations

import json
import random
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

from llmos_edge.esp32.protocol import FrameType, Link

from .conftest import PtyPair
from .linkutil import CorruptingProxy, open_port


def _expect(link: Link, ftype: FrameType, timeout: float = 10) -> bytes:
    f = link.recv(timeout)
    assert f is not None, f"no {ftype.name} frame"
    assert f.type == ftype, (f.type, f.payload)
    return f.payload


def test_ping_version_echo_clean(harness_bin: Path, make_pty: Callable[[str], PtyPair]) -> None:
    pair = make_pty("clean")
    c = subprocess.Popen([str(harness_bin), "echo", str(pair.a)], stderr=subprocess.PIPE, text=True)
    try:
        link = Link(open_port(pair.b), ack_timeout=0.2)
        link.send(FrameType.PING, b"abc")
        assert _expect(link, FrameType.PONG) == b"abc"
        link.send(FrameType.VERSION)
        assert json.loads(_expect(link, FrameType.VERSION))["proto"] == 1
        big = bytes(range(256)) * 4
        link.send(FrameType.REQUEST, big)
        assert _expect(link, FrameType.CHUNK) == big
        link.send(FrameType.END)
        stats = json.loads(_expect(link, FrameType.END))
        assert stats["requests"] == 1 and stats["crc_errors"] == 0
        assert c.wait(10) == 0
    finally:
        c.kill()


def test_10000_frames_with_corruption_none_lost_or_duplicated(
    harness_bin: Path, make_pty: Callable[[str], PtyPair]
) -> None:
    """Python sends 10,000 random payloads; C echoes each; a proxy corrupts both directions."""
    c_side, py_side = make_pty("c"), make_pty("py")
    proxy = CorruptingProxy(c_side.b, py_side.a, rate=0.02, seed=5)
    proxy.start()
    c = subprocess.Popen([str(harness_bin), "echo", str(c_side.a), "ack_ms=50", "retries=200"],
                         stderr=subprocess.PIPE, text=True)
    rng = random.Random(42)
    try:  # generous retry budgets: this machine's cores are shared and a process may stall seconds
        link = Link(open_port(py_side.b), ack_timeout=0.05, max_retries=200)
        echoed: list[bytes] = []
        total = 10_000
        for _ in range(total):
            payload = rng.randbytes(rng.randint(0, 96))
            link.send(FrameType.REQUEST, payload)
            echo = _expect(link, FrameType.CHUNK)
            assert echo == payload  # in order, intact: no loss, no duplicate, no undetected damage
            echoed.append(echo)
        link.send(FrameType.END)
        stats = json.loads(_expect(link, FrameType.END))
        assert c.wait(10) == 0
    finally:
        c.kill()
        proxy.close()
        print("C stderr:", c.communicate()[1][-2000:])
    assert len(echoed) == total
    assert stats["requests"] == total  # C delivered each request exactly once
    injected = sum(proxy.events.values())
    c_detected = stats["crc_errors"] + stats["header_errors"] + stats["oversize"] + stats["flushed"]
    py_detected = link.decoder.stats.errors
    print(f"injected={proxy.events} C detected={c_detected} dup={stats['duplicates']} "
          f"retries C={stats['retries']} py={link.stats.retries} py detected={py_detected}")
    assert injected > 100
    assert c_detected > 0 and py_detected > 0
    assert stats["retries"] + link.stats.retries > 0


def test_pipelined_window_with_corruption_delivers_exact_stream(
    harness_bin: Path, make_pty: Callable[[str], PtyPair]
) -> None:
    """Up to 4 frames in flight (go-back-N); the C sink's CRC32 chain over all payloads must match."""
    c_side, py_side = make_pty("c"), make_pty("py")
    proxy = CorruptingProxy(c_side.b, py_side.a, rate=0.03, seed=9)
    proxy.start()
    c = subprocess.Popen([str(harness_bin), "sink", str(c_side.a), "ack_ms=40", "retries=60"],
                         stderr=subprocess.PIPE, text=True)
    rng = random.Random(7)
    digest = 0
    try:
        link = Link(open_port(py_side.b), ack_timeout=0.04, max_retries=60)
        for _ in range(3000):
            payload = rng.randbytes(rng.randint(0, 300))
            digest = zlib.crc32(payload, digest)
            link.send(FrameType.REQUEST, payload)
        link.send(FrameType.END)
        stats = json.loads(_expect(link, FrameType.END))
        assert c.wait(10) == 0
    finally:
        c.kill()
        proxy.close()
    assert stats["requests"] == 3000 and stats["digest"] == digest
    assert sum(proxy.events.values()) > 20 and link.stats.retries > 0
    assert stats["duplicates"] + stats["out_of_order"] > 0  # go-back-N resends were discarded, not delivered
