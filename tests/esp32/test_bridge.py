"""The host bridge against a real pty, the real C client, and a real runtime (tiny model)."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmos_edge.esp32 import ports
from llmos_edge.esp32.bridge import Bridge, BridgeConfig
from llmos_edge.esp32.protocol import FrameType, Link, crc8

from .conftest import PtyPair
from .linkutil import open_port
from .sse_standin import StandIn


@pytest.fixture(autouse=True)
def _own_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_EDGE_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture
def start_bridge() -> Iterator[Callable[..., Bridge]]:
    running: list[tuple[Bridge, threading.Thread]] = []

    def start(port: Path, url: str = "http://127.0.0.1:9", **kw: object) -> Bridge:
        bridge = Bridge(BridgeConfig(str(port), url, ack_timeout=0.1, reconnect_max=0.3, **kw))  # type: ignore[arg-type]
        t = threading.Thread(target=bridge.run, daemon=True)
        t.start()
        running.append((bridge, t))
        return bridge

    yield start
    for bridge, t in running:
        bridge.stop()
        t.join(5)
        assert not t.is_alive()


def _device(pair: PtyPair) -> Link:
    return Link(open_port(pair.a), ack_timeout=0.1, max_retries=20)


def _ping(link: Link, data: bytes = b"p") -> None:
    link.send(FrameType.PING, data)
    f = link.recv(5)
    assert f is not None and f.type == FrameType.PONG and f.payload == data


def _client(harness: Path, pair: PtyPair, prompt: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(harness), "client", str(pair.a), prompt, "timeout=60"],
                          capture_output=True, text=True, timeout=90)


def test_prompt_from_c_client_reaches_model_and_streams_back(
    harness_bin: Path, make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge],
    runtime_url: str,
) -> None:
    pair = make_pty("e2e")
    bridge = start_bridge(pair.b, runtime_url, max_tokens=12)
    assert bridge.connected.wait(10)
    prompt = {"prompt": "What is the capital of France?", "temperature": 0}
    r = _client(harness_bin, pair, json.dumps(prompt))
    assert r.returncode == 0, r.stderr
    assert '"proto": 1' in r.stderr  # version exchanged
    end = json.loads(r.stderr.split("end: ", 1)[1].splitlines()[0])
    assert end["chunks"] >= 1 and end["finish_reason"] in ("stop", "length")
    assert len(r.stdout) > 0  # the model's tokens, streamed chunk by chunk
    assert bridge.stats.requests == 1 and bridge.stats.failed_requests == 0


def test_stream_pieces_arrive_in_order_via_standin(
    harness_bin: Path, make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge]
) -> None:
    """Stand-in SSE server (not the runtime): checks exact bytes, incl. multi-byte UTF-8."""
    pieces = ["Par", "is ", "é", "🙂", " end"]
    standin = StandIn(pieces)
    try:
        pair = make_pty("sse")
        bridge = start_bridge(pair.b, standin.url)
        assert bridge.connected.wait(10)
        r = _client(harness_bin, pair, '{"prompt": "hi", "max_tokens": 5}')
        assert r.returncode == 0, r.stderr
        assert r.stdout == "".join(pieces)
        assert standin.bodies[0]["messages"] == [{"role": "user", "content": "hi"}]
        assert standin.bodies[0]["max_tokens"] == 5 and standin.bodies[0]["stream"] is True
    finally:
        standin.close()


def test_request_timeout_and_runtime_down_give_error_frames(
    harness_bin: Path, make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge]
) -> None:
    slow = StandIn(["a"] * 50, delay=0.2)
    try:
        pair = make_pty("slow")
        bridge = start_bridge(pair.b, slow.url, request_timeout=1.0)
        assert bridge.connected.wait(10)
        t0 = time.monotonic()
        r = _client(harness_bin, pair, "hi")
        assert r.returncode == 2 and "timed out after 1 s" in r.stderr
        assert time.monotonic() - t0 < 8
    finally:
        slow.close()
    pair2 = make_pty("down")
    bridge2 = start_bridge(pair2.b, "http://127.0.0.1:9")  # nothing listens on port 9
    assert bridge2.connected.wait(10)
    r = _client(harness_bin, pair2, "hi")
    assert r.returncode == 2 and "unreachable" in r.stderr
    _ping(_device(pair2))  # still serving


def test_unplugged_port_then_plug_and_replug(
    make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge], caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, "llmos_edge.esp32.bridge")
    pair = PtyPair(tmp_path / "late-dev", tmp_path / "late-host")
    bridge = start_bridge(pair.b)
    time.sleep(0.8)
    assert bridge.stats.open_failures >= 1 and not bridge.connected.is_set()
    assert "does not exist (device unplugged?)" in caplog.text
    pair.plug()
    try:
        assert bridge.connected.wait(10)
        _ping(_device(pair))
        pair.unplug()  # cable pulled while connected
        deadline = time.monotonic() + 10
        while bridge.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bridge.connected.is_set()
        pair.plug()  # and plugged back in
        assert bridge.connected.wait(10)
        _ping(_device(pair), b"again")
        assert bridge.stats.connects == 2
    finally:
        pair.unplug()


def test_port_in_use_is_reported_and_bridge_waits(
    make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge], caplog: pytest.LogCaptureFixture
) -> None:
    pair = make_pty("busy")
    with ports.port_lock(str(pair.b), "llmos-edge flash"):
        bridge = start_bridge(pair.b)
        time.sleep(0.8)
        assert not bridge.connected.is_set()
        assert f"in use by pid {os.getpid()} (llmos-edge flash, since" in caplog.text
    assert bridge.connected.wait(10)
    _ping(_device(pair))


def test_garbage_and_oversize_frames_are_dropped_and_bridge_keeps_serving(
    make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge], caplog: pytest.LogCaptureFixture
) -> None:
    pair = make_pty("junk")
    bridge = start_bridge(pair.b)
    assert bridge.connected.wait(10)
    dev = _device(pair)
    dev.port.write(os.urandom(5000))
    head = struct.pack("<BBHH", FrameType.REQUEST, 0, 1, 60000)
    dev.port.write(b"\xa5\x5a" + head + bytes([crc8(head)]) + os.urandom(2000))  # oversize frame
    _ping(dev, b"still there")
    assert "oversize=1" in caplog.text and "garbage_bytes=" in caplog.text
    dev.send(FrameType.CHUNK, b"unexpected")
    f = dev.recv(5)
    assert f is not None and f.type == FrameType.ERROR and b"unexpected frame type" in f.payload
    _ping(dev)


def test_prompt_round_trip_survives_a_noisy_line(
    harness_bin: Path, make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge]
) -> None:
    """C client -> corrupting proxy -> bridge -> stand-in SSE server; the answer arrives exact."""
    from .linkutil import CorruptingProxy

    pieces = [f"token{i} " for i in range(200)]
    standin = StandIn(pieces)
    dev, host = make_pty("dev"), make_pty("host")
    proxy = CorruptingProxy(dev.b, host.a, rate=0.05, seed=3)
    proxy.start()
    try:
        bridge = start_bridge(host.b, standin.url)
        assert bridge.connected.wait(10)
        r = subprocess.run([str(harness_bin), "client", str(dev.a), "hi", "ack_ms=60", "retries=40"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "".join(pieces)
        assert sum(proxy.events.values()) > 0
    finally:
        proxy.close()
        standin.close()


def test_unplug_during_an_answer_then_replug(
    make_pty: Callable[[str], PtyPair], start_bridge: Callable[..., Bridge]
) -> None:
    slow = StandIn(["x"] * 40, delay=0.1)
    try:
        pair = make_pty("mid")
        bridge = start_bridge(pair.b, slow.url)
        assert bridge.connected.wait(10)
        dev = _device(pair)
        dev.send(FrameType.REQUEST, b"long answer please")
        f = dev.recv(10)
        assert f is not None and f.type == FrameType.CHUNK
        pair.unplug()
        deadline = time.monotonic() + 10
        while bridge.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bridge.connected.is_set()
        pair.plug()
        assert bridge.connected.wait(10)
        _ping(_device(pair), b"back")
    finally:
        slow.close()
