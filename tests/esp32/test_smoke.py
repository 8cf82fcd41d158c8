"""Serial smoke after flashing: the C device driver over a pty plays the flashed board."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.errors import DeviceError
from llmos_edge.esp32.smoke import serial_smoke

from .conftest import PtyPair


@pytest.fixture(autouse=True)
def _own_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_EDGE_LOCK_DIR", str(tmp_path / "locks"))


def test_smoke_ping_version_and_prompt_round_trip(harness_bin: Path, make_pty: Callable[[str], PtyPair],
                                                  runtime_url: str) -> None:
    pair = make_pty("smoke")
    dev = subprocess.Popen([str(harness_bin), "device", str(pair.a)], stderr=subprocess.PIPE, text=True)
    try:
        report = serial_smoke(str(pair.b), 921600, runtime_url, timeout=60)
    finally:
        dev.kill()
        dev.wait()
    assert report.version["proto"] == 1 and report.version["fw"] == "harness"
    assert report.answer_chars > 0


def test_smoke_fails_clearly_when_device_is_silent(make_pty: Callable[[str], PtyPair]) -> None:
    pair = make_pty("mute")
    with pytest.raises(DeviceError, match="no ACK for a PING frame") as err:
        serial_smoke(str(pair.b), 921600, "http://127.0.0.1:9", timeout=2)
    assert "firmware" in err.value.render()
