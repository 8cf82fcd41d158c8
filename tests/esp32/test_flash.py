"""esptool flashing against the PyPI fake ROM bootloader `esp32-mock-bootloader` (socket://).

No firmware runs on the mock: it answers the ROM protocol and keeps an in-memory flash, so
write-flash, the MD5 verify, verify-flash and chip detection are real; booting is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.cli.main import main
from llmos_edge.errors import CheckFailed, DeviceError, UserError
from llmos_edge.esp32 import images as img
from llmos_edge.esp32.flash import FlashOptions, _fatal, connect, find_images, flash, verify
from llmos_edge.esp32.ports import PortBusy

from .conftest import PtyPair
from .tiny_elf import esp32_app_elf, esp32s3_app_elf, esp32s3_bootloader_elf


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle folder with firmware/ assembled by esptool elf2image + our partition table/otadata."""
    src = tmp_path / "src"
    src.mkdir()
    csv = src / "partitions.csv"
    csv.write_text("nvs,data,nvs,0x9000,0x4000\notadata,data,ota,0xd000,0x2000\n"
                   "phy_init,data,phy,0xf000,0x1000\nota_0,app,ota_0,0x10000,0x300000\n"
                   "ota_1,app,ota_1,0x310000,0x300000\n")
    img.assemble(esp32s3_app_elf(src / "app.elf"), esp32s3_bootloader_elf(src / "boot.elf"), csv,
                 tmp_path / "bundle" / "firmware", chip="esp32s3", flash_size="16MB")
    return tmp_path / "bundle"


@pytest.fixture
def mock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    monkeypatch.setenv("ESP32_MOCK_BOOTLOADER_STATE_DIR", str(tmp_path / "mockstate"))
    monkeypatch.setenv("LLMOS_EDGE_LOCK_DIR", str(tmp_path / "locks"))
    pytest.importorskip("esp32_mock_bootloader",
                        reason="test extra esp32-mock-bootloader==0.3.0 is not installed")
    from esp32_mock_bootloader import mock_bootloader

    handles: list[Any] = []

    def start(chip: str) -> Any:
        handles.append(mock_bootloader(chip=chip))
        return handles[-1]

    yield start
    for h in handles:
        h.stop()


def _opts(url: str, **kw: Any) -> FlashOptions:
    return FlashOptions(url, **{"before": "no-reset", "after": "no-reset", "connect_attempts": 2, **kw})


def test_images_pass_image_info_and_partition_table_is_valid(bundle: Path) -> None:
    images = find_images(bundle)
    assert [off for off, _ in images.files] == [0x0, 0x8000, 0xD000, 0x10000]
    info = img.check_image((bundle / "firmware" / "app.bin").read_bytes(), "esp32s3", "app")
    assert info.checksum_ok and info.digest_ok and info.project_name == "llmos-host-offload"
    table = (bundle / "firmware" / "partition-table.bin").read_bytes()
    assert len(table) == 0xC00 and table[:2] == b"\xaa\x50"
    assert table[5 * 32 : 5 * 32 + 2] == b"\xeb\xeb"  # MD5 entry after the 5 partitions
    merged = (bundle / "firmware" / "merged.bin").read_bytes()
    assert merged[0x10000 : 0x10000 + 64] == (bundle / "firmware" / "app.bin").read_bytes()[:64]


def test_flash_and_verify_pass_via_cli(bundle: Path, mock: Callable[[str], Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    m = mock("esp32s3")
    main(["flash", str(bundle), "--port", m.url(), "--before", "no-reset", "--after", "no-reset",
          "--no-smoke", "--baud", "460800"])
    out = capsys.readouterr()
    assert "flashed ESP32-S3" in out.out and "app.bin@0x10000" in out.out and "verified" in out.out
    assert "Hash of data verified" in out.out + out.err  # esptool's own MD5 check after writing


def test_tampered_image_fails_verify(bundle: Path, mock: Callable[[str], Any]) -> None:
    m = mock("esp32s3")
    images = find_images(bundle)
    flash(images, _opts(m.url(), stub=False))
    app = bundle / "firmware" / "app.bin"
    data = bytearray(app.read_bytes())
    data[0x200] ^= 0xFF
    app.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match="changed since it was built"):
        flash(images, _opts(m.url()))  # caught offline by the recorded sha256
    unhashed = img.FirmwareImages(images.chip, images.files, sha256={})
    with pytest.raises(CheckFailed, match="flash contents differ"):
        verify(unhashed, _opts(m.url()))  # the chip's MD5 of the flashed app differs


def test_wrong_chip_board_refused(bundle: Path, mock: Callable[[str], Any]) -> None:
    m = mock("esp32")
    with pytest.raises(DeviceError, match="is an ESP32, but this firmware is for ESP32-S3"):
        flash(find_images(bundle), _opts(m.url()))


def test_wrong_chip_image_refused_before_connecting(bundle: Path, tmp_path: Path) -> None:
    other = img.elf_to_image(esp32_app_elf(tmp_path / "e32.elf"), "esp32", "4MB")
    (bundle / "firmware" / "app.bin").write_bytes(other)
    images = img.FirmwareImages("esp32s3", find_images(bundle).files)
    with pytest.raises(UserError, match="built for esp32, not esp32s3"):
        flash(images, _opts("socket://127.0.0.1:9"))  # nothing listens: proves no connection was tried


def test_second_flash_on_same_port_told_who_holds_it(bundle: Path, mock: Callable[[str], Any]) -> None:
    m = mock("esp32s3")
    code = ("import sys, time; from llmos_edge.esp32.ports import port_lock\n"
            "with port_lock(sys.argv[1], 'llmos-edge flash'):\n print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code, m.url()], stdout=subprocess.PIPE, text=True,
                              env={**os.environ})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(PortBusy, match=rf"in use by pid {holder.pid} \(llmos-edge flash, since"):
            flash(find_images(bundle), _opts(m.url()))
    finally:
        holder.kill()
        holder.wait()
    flash(find_images(bundle), _opts(m.url(), stub=False))  # free again


def test_silent_port_gives_boot_mode_hints(make_pty: Callable[[str], PtyPair]) -> None:
    pair = make_pty("silent")
    with pytest.raises(DeviceError, match="No serial data received") as err, \
            connect(_opts(str(pair.a), connect_attempts=1), "esp32s3"):
        pass
    assert "hold BOOT" in err.value.render() and "--baud 115200" in err.value.render()


def test_wrong_boot_mode_message_gets_hints() -> None:
    """A real chip in flash-boot mode makes esptool raise this; no pty can fake the reset dance."""
    from esptool.util import FatalError

    err = _fatal(FatalError("Wrong boot mode detected (0x8)! The chip needs to be in download mode."), "x")
    assert "hold BOOT" in err.render() and "another USB cable" in err.render()


def test_missing_firmware_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no firmware images"):
        find_images(tmp_path)
