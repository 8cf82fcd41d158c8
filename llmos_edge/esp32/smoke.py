"""Serial smoke after flashing: ping, version, and one prompt round trip through the bridge logic.

The host asks the device for a self-test (a REQUEST frame carrying the prompt); the firmware sends
that prompt back as its own REQUEST, exactly as if typed on the device; the host answers it through
the same code the bridge daemon uses, and the device reports END {"selftest": "ok", "chars": N}.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from ..errors import CheckFailed
from . import ports
from .bridge import Bridge, BridgeConfig
from .protocol import Frame, FrameType, Link


@dataclasses.dataclass(frozen=True)
class SmokeReport:
    version: dict[str, Any]
    answer_chars: int
    seconds: float


def _expect(link: Link, ftype: FrameType, timeout: float, step: str) -> Frame:
    f = link.recv(timeout)
    if f is None:
        hints = ["press RESET on the board and retry", "check that the llmos firmware is flashed"]
        raise CheckFailed(f"serial smoke: no reply to {step} within {timeout:g} s", hints=hints)
    if f.type == FrameType.ERROR:
        text = f.payload.decode(errors="replace")
        raise CheckFailed(f"serial smoke: device reported an error at {step}: {text}")
    if f.type != ftype:
        raise CheckFailed(f"serial smoke: expected {ftype.name} at {step}, got frame type {f.type}")
    return f


def serial_smoke(port: str, baud: int, runtime_url: str, *, prompt: str = "Say hello.",
                 timeout: float = 60.0) -> SmokeReport:
    t0 = time.monotonic()
    bridge = Bridge(BridgeConfig(port, runtime_url, baud=baud, request_timeout=timeout, max_tokens=16))
    with ports.port_lock(port, "llmos-edge smoke"):
        ser = ports.open_serial(port, baud)
        try:
            link = Link(ser)
            link.send(FrameType.PING, b"smoke")
            if _expect(link, FrameType.PONG, 5, "ping").payload != b"smoke":
                raise CheckFailed("serial smoke: ping echo differs (link corrupts data?)")
            link.send(FrameType.VERSION)
            version = json.loads(_expect(link, FrameType.VERSION, 5, "version").payload or b"{}")
            link.send(FrameType.REQUEST, prompt.encode())
            asked = _expect(link, FrameType.REQUEST, 10, "self-test prompt")
            bridge._request(link, asked.payload)
            done = json.loads(_expect(link, FrameType.END, timeout, "self-test answer").payload)
        finally:
            ser.close()
    if done.get("selftest") != "ok":
        raise CheckFailed(f"serial smoke: device self-test said {done}")
    return SmokeReport(version, int(done.get("chars", 0)), time.monotonic() - t0)
