"""`llmos-edge flash`: esptool as a library (esptool.cmds), with a port lock and clear hints.

Order: check images offline (hashes, chip id) -> lock the port -> connect (reset strategy) ->
refuse a wrong chip -> stub + baud change -> write-flash (compressed) -> verify-flash -> reset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import CheckFailed, DeviceError, UserError
from . import ports
from .images import FirmwareImages, check_images, load_flasher_args

CONNECT_HINTS = [
    "hold BOOT, press and release RESET, then release BOOT (download mode), and retry",
    "try another USB cable (a data cable, not charge-only) or another USB port",
    "lower the baud rate: --baud 115200",
]
BEFORE = ("default-reset", "usb-reset", "no-reset", "no-reset-no-sync")
AFTER = ("hard-reset", "soft-reset", "no-reset", "no-reset-stub", "watchdog-reset")


@dataclasses.dataclass(frozen=True)
class FlashOptions:
    port: str
    baud: int = 921600
    before: str = "default-reset"
    after: str = "hard-reset"
    stub: bool = True
    compress: bool = True
    verify: bool = True
    connect_attempts: int = 7


@dataclasses.dataclass(frozen=True)
class FlashReport:
    chip: str
    mac: str | None
    written: tuple[tuple[int, str, int], ...]  # (offset, file name, size)
    verified: bool


def find_images(bundle: Path) -> FirmwareImages:
    """A bundle folder with firmware/flasher_args.json, or an ESP-IDF build folder itself."""
    for folder in (bundle / "firmware", bundle / "firmware" / "build", bundle, bundle / "build"):
        if (folder / "flasher_args.json").is_file():
            return load_flasher_args(folder)
    raise UserError(
        f"{bundle} holds no firmware images (no firmware/flasher_args.json)",
        hints=["build for an esp32 target with idf.py on PATH (llmos-edge build)",
               "or pass the ESP-IDF build folder of the rendered firmware project"],
    )


def _fatal(exc: Exception, what: str) -> DeviceError:
    text = str(exc)
    hints = CONNECT_HINTS if ("No serial data" in text or "Wrong boot mode" in text
                              or "Failed to connect" in text or "timed out" in text.lower()) else []
    return DeviceError(f"{what}: {text.strip()}", hints=hints or ["try another USB cable or port"])


@contextmanager
def connect(opts: FlashOptions, chip: str) -> Iterator[Any]:
    """Connect, detect the chip and refuse a mismatch; the port is locked for the whole session."""
    from esptool.cmds import detect_chip
    from esptool.util import FatalError

    if opts.before not in BEFORE or opts.after not in AFTER:
        raise UserError(f"unknown reset strategy {opts.before!r}/{opts.after!r}",
                        hints=[f"--before one of {', '.join(BEFORE)}", f"--after one of {', '.join(AFTER)}"])
    with ports.port_lock(opts.port, "llmos-edge flash"):
        try:
            esp = detect_chip(opts.port, 115200, opts.before, connect_attempts=opts.connect_attempts)
        except FatalError as exc:
            raise _fatal(exc, f"cannot talk to the bootloader on {opts.port}") from exc
        except OSError as exc:
            raise ports._open_error(opts.port, exc) from exc
        try:
            want, got = _chip_name(chip), str(esp.CHIP_NAME)
            if got != want:
                raise DeviceError(
                    f"the board on {opts.port} is an {got}, but this firmware is for {want}; refusing",
                    hints=["plug in the board this bundle was built for", "or build for the matching target"],
                )
            yield esp
        finally:
            esp._port.close()


def _chip_name(chip: str) -> str:
    from esptool.targets import CHIP_DEFS

    return str(CHIP_DEFS[chip].CHIP_NAME)


def flash(images: FirmwareImages, opts: FlashOptions) -> FlashReport:
    from esptool.cmds import reset_chip, run_stub, write_flash
    from esptool.util import FatalError

    check_images(images)
    addr_data = [(off, path.read_bytes()) for off, path in images.files]
    with connect(opts, images.chip) as esp:
        try:
            if opts.stub:
                esp = run_stub(esp)
            if opts.baud != 115200:
                esp.change_baud(opts.baud)
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            write_flash(esp, addr_data, flash_mode=images.flash_mode, flash_size=images.flash_size,
                        flash_freq=images.flash_freq, compress=opts.compress, no_compress=not opts.compress,
                        force=False)
        except FatalError as exc:
            raise _fatal(exc, "write-flash failed") from exc
        if opts.verify:
            _verify(esp, addr_data)
        reset_chip(esp, opts.after)
    return FlashReport(_chip_name(images.chip), mac,
                       tuple((off, p.name, p.stat().st_size) for off, p in images.files), opts.verify)


def _verify(esp: Any, addr_data: list[tuple[int, bytes]]) -> None:
    from esptool.cmds import verify_flash
    from esptool.util import FatalError

    try:
        verify_flash(esp, addr_data)
    except FatalError as exc:
        hints = ["flash again", "if it keeps failing: another cable, or a worn flash chip"]
        raise CheckFailed(f"flash contents differ from the images: {exc}", hints=hints) from exc


def verify(images: FirmwareImages, opts: FlashOptions) -> None:
    """Compare the board's flash with the images without writing (MD5 on the chip)."""
    addr_data = [(off, path.read_bytes()) for off, path in images.files]
    with connect(opts, images.chip) as esp:
        _verify(esp, addr_data)
