"""Serial ports: list them with a chip guess, and lock one so two tools never share it."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import DeviceError

# (vid, pid) -> what is usually behind it; VID 0x303A is Espressif's native USB.
_KNOWN: dict[tuple[int, int | None], str] = {
    (0x303A, 0x1001): "ESP32-S3/C3/C6 (USB-Serial/JTAG)",
    (0x303A, 0x0002): "ESP32-S2/S3 (USB CDC, TinyUSB)",
    (0x303A, None): "Espressif native USB",
    (0x10C4, 0xEA60): "CP210x USB-UART (many ESP32 dev boards)",
    (0x1A86, 0x7523): "CH340 USB-UART (many ESP32 dev boards)",
    (0x1A86, 0x55D4): "CH9102 USB-UART (many ESP32 dev boards)",
    (0x0403, 0x6001): "FTDI FT232 USB-UART",
    (0x0403, 0x6010): "FTDI FT2232 (ESP-Prog)",
}


@dataclasses.dataclass(frozen=True)
class PortInfo:
    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    description: str
    chip_guess: str | None


def guess_chip(vid: int | None, pid: int | None) -> str | None:
    if vid is None:
        return None
    return _KNOWN.get((vid, pid)) or _KNOWN.get((vid, None))


def list_ports() -> list[PortInfo]:
    from serial.tools import list_ports as lp

    out = []
    for p in sorted(lp.comports(), key=lambda x: x.device):
        out.append(PortInfo(p.device, p.vid, p.pid, p.serial_number, p.description or "",
                            guess_chip(p.vid, p.pid)))
    return out


def lock_dir() -> Path:
    env = os.environ.get("LLMOS_EDGE_LOCK_DIR")
    if env:
        return Path(env)
    run_lock = Path("/run/lock")
    if run_lock.is_dir() and os.access(run_lock, os.W_OK):
        return run_lock
    return Path(tempfile.gettempdir())


def _lock_path(port: str) -> Path:
    return lock_dir() / f"llmos-edge-{re.sub(r'[^A-Za-z0-9_.-]', '_', port.strip('/'))}.lock"


class PortBusy(DeviceError):
    """Another process holds the port."""


def _holder(path: Path) -> str:
    try:
        info: dict[str, Any] = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid', '?')} ({info.get('purpose', '?')}, since {since})"


@contextlib.contextmanager
def port_lock(port: str, purpose: str) -> Iterator[Path]:
    """Hold an exclusive advisory lock for `port`; a second holder is told who has it."""
    path = _lock_path(port)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise PortBusy(
                f"serial port {port} is in use by {_holder(path)}",
                hints=["wait for that command to finish, or stop it",
                       "the host bridge holds its port: systemctl stop llmos-bridge, then retry"],
            ) from None
        info = json.dumps({"pid": os.getpid(), "purpose": purpose, "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        yield path
    finally:
        os.close(fd)


def open_serial(port: str, baud: int, timeout: float = 0.01) -> Any:
    """Open with pyserial's exclusive flag; map the usual failures to clear DeviceErrors."""
    import serial

    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=timeout, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        raise _open_error(port, exc) from exc


def _open_error(port: str, exc: Exception) -> DeviceError:
    text = str(exc)
    if "exclusively lock" in text or getattr(exc, "errno", None) == errno.EBUSY:
        return PortBusy(f"serial port {port} is in use by another program",
                        hints=["close serial monitors (idf.py monitor, screen, minicom) on that port"])
    if "No such file" in text or getattr(exc, "errno", None) == errno.ENOENT:
        return PortMissing(f"serial port {port} does not exist (device unplugged?)",
                           hints=["plug the board in and check `llmos-edge ports`",
                                  "try another USB cable or port"])
    if "Permission denied" in text:
        return DeviceError(f"no permission to open {port}",
                           hints=["add your user to the dialout group: sudo usermod -aG dialout $USER"])
    return DeviceError(f"cannot open serial port {port}: {text}", hints=["try another USB cable or port"])


class PortMissing(DeviceError):
    """The port path does not exist (unplugged)."""
