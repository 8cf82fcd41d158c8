"""`llmos-edge ports` and the bridge as the process systemd runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.cli.main import main
from llmos_edge.esp32.ports import guess_chip, list_ports
from llmos_edge.esp32.protocol import FrameType, Link

from .conftest import PtyPair
from .linkutil import open_port


def test_chip_guess_from_usb_ids() -> None:
    assert guess_chip(0x303A, 0x1001) == "ESP32-S3/C3/C6 (USB-Serial/JTAG)"
    assert guess_chip(0x303A, 0x4242) == "Espressif native USB"
    assert guess_chip(0x10C4, 0xEA60) is not None and guess_chip(None, None) is None


def test_ports_lists_what_pyserial_sees(capsys: pytest.CaptureFixture[str]) -> None:
    """This machine has no USB serial device; --all still lists the platform's ports (e.g. ttyS*)."""
    main(["ports"])
    usb = [p for p in list_ports() if p.vid is not None]
    out = capsys.readouterr().out
    if not usb:
        assert "no USB serial ports found" in out
    main(["ports", "--all"])
    out = capsys.readouterr().out
    for p in list_ports():
        assert p.device in out


def test_bridge_daemon_process_serves_and_stops_on_sigterm(
    make_pty: Callable[[str], PtyPair], tmp_path: Path
) -> None:
    pair = make_pty("daemon")
    env = {**os.environ, "LLMOS_EDGE_LOCK_DIR": str(tmp_path / "locks")}
    proc = subprocess.Popen([sys.executable, "-m", "llmos_edge.esp32.bridge", "--port", str(pair.b),
                             "--runtime", "http://127.0.0.1:9"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        dev = Link(open_port(pair.a), ack_timeout=0.2, max_retries=50)
        dev.send(FrameType.PING, b"systemd")
        f = dev.recv(10)
        assert f is not None and f.type == FrameType.PONG and f.payload == b"systemd"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "bridge connected to" in err
