"""`llmos-edge flash` and `llmos-edge ports`: thin click wrappers over llmos_edge.esp32."""

from __future__ import annotations

from pathlib import Path

import click

from ..esp32.flash import AFTER, BEFORE


@click.command("flash")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 (or socket://host:port)")
@click.option("--baud", type=int, default=921600, show_default=True, help="flashing baud rate")
@click.option("--before", type=click.Choice(BEFORE), default="default-reset", show_default=True)
@click.option("--after", type=click.Choice(AFTER), default="hard-reset", show_default=True)
@click.option("--no-stub", is_flag=True, help="talk to the ROM bootloader directly")
@click.option("--no-compress", is_flag=True)
@click.option("--no-verify", is_flag=True, help="skip verify-flash after writing")
@click.option("--smoke/--no-smoke", default=True, show_default=True,
              help="after flashing: ping, version and one prompt round trip over the port")
@click.option("--runtime", default="http://127.0.0.1:8088", show_default=True,
              help="runtime URL used for the smoke prompt")
def flash_cmd(bundle: Path, port: str, baud: int, before: str, after: str, no_stub: bool,
              no_compress: bool, no_verify: bool, smoke: bool, runtime: str) -> None:
    """Write a bundle's ESP32 firmware with esptool, verify it, then smoke-test it over serial."""
    from ..esp32.flash import FlashOptions, find_images, flash

    opts = FlashOptions(port, baud, before, after, not no_stub, not no_compress, not no_verify)
    report = flash(find_images(bundle), opts)
    click.echo(f"flashed {report.chip} (MAC {report.mac}): "
               + ", ".join(f"{name}@{off:#x}" for off, name, _ in report.written)
               + (" - verified" if report.verified else ""))
    if smoke:
        from ..esp32.smoke import serial_smoke

        s = serial_smoke(port, 115200 if port.startswith("socket://") else baud, runtime)
        click.echo(f"smoke ok: version {s.version}, answer {s.answer_chars} chars in {s.seconds:.1f} s")


@click.command("ports")
@click.option("--all", "show_all", is_flag=True, help="include ports without a USB vendor id")
def ports_cmd(show_all: bool) -> None:
    """List serial ports with USB vendor/product ids and a chip guess."""
    from ..esp32.ports import list_ports

    rows = [p for p in list_ports() if show_all or p.vid is not None]
    if not rows:
        click.echo("no USB serial ports found (plug the board in; --all lists every port)")
        return
    for p in rows:
        ids = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "-"
        click.echo(f"{p.device}\t{ids}\t{p.chip_guess or 'unknown'}\t{p.description}")
