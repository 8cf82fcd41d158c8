"""Firmware images: partition table and otadata binaries, esptool elf2image/merge-bin, image checks.

The layout written next to the images is ESP-IDF's own `flasher_args.json` (flash_files,
flash_settings, extra_esptool_args), plus `llmos_sha256` so a changed image is caught before flashing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

from ..errors import CheckFailed, UserError
from ..fsutil import atomic_write_bytes, atomic_write_text, sha256_file

BOOTLOADER_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
PARTITION_TABLE_OFFSET = 0x8000
_TYPES = {"app": 0x00, "data": 0x01}
_SUBTYPES = {
    "app": {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
             "efuse": 0x05, "undefined": 0x06, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83},
}


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str
    type: str
    subtype: str
    offset: int
    size: int


@dataclasses.dataclass(frozen=True)
class FirmwareImages:
    """What to write where; loaded from (or written as) flasher_args.json."""

    chip: str
    files: tuple[tuple[int, Path], ...]
    flash_mode: str = "dio"
    flash_size: str = "keep"
    flash_freq: str = "keep"
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)


def _num(text: str) -> int:
    text = text.strip().upper()
    mult = 1
    if text.endswith(("K", "M")):
        mult = 1024 if text[-1] == "K" else 1024 * 1024
        text = text[:-1]
    return int(text, 0) * mult


def parse_partitions(csv_text: str) -> list[Partition]:
    rows = [r for r in csv.reader(io.StringIO(csv_text)) if r and not r[0].strip().startswith("#")]
    parts = []
    for r in rows:
        name, ptype, sub, off, size = (c.strip() for c in r[:5])
        if ptype not in _TYPES or sub not in _SUBTYPES[ptype]:
            raise UserError(f"partitions.csv: unknown type/subtype {ptype}/{sub} for '{name}'")
        parts.append(Partition(name, ptype, sub, _num(off), _num(size)))
    return parts


def partition_table_bin(parts: list[Partition]) -> bytes:
    """ESP-IDF binary partition table: 32-byte entries, an MD5 entry, 0xFF up to 0xC00 bytes."""
    out = b""
    for p in parts:
        out += struct.pack("<2sBBLL16sL", b"\xaa\x50", _TYPES[p.type], _SUBTYPES[p.type][p.subtype],
                           p.offset, p.size, p.name.encode()[:16], 0)
    out += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(out).digest()
    return out + b"\xff" * (0xC00 - len(out))


def elf_to_image(elf: Path, chip: str, flash_size: str) -> bytes:
    from esptool.cmds import elf2image

    with _quiet():
        data = elf2image(str(elf), chip, None, flash_mode="dio", flash_size=flash_size)
    assert isinstance(data, bytes)
    return data


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    chip_id: int
    segments: int
    checksum_ok: bool
    digest_ok: bool | None
    project_name: str | None
    version: str | None


def check_image(data: bytes, chip: str, what: str) -> ImageInfo:
    """esptool's image-info checks as data: chip id, checksum, SHA-256 digest; wrong chip refused."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.targets import CHIP_DEFS
    from esptool.util import FatalError

    try:
        with _quiet():
            image = LoadFirmwareImage(chip, data)
    except (FatalError, struct.error, ValueError) as exc:
        raise CheckFailed(f"{what} is not a valid {chip} firmware image: {exc}") from exc
    want = CHIP_DEFS[chip].IMAGE_CHIP_ID
    if image.chip_id != want:
        names = {c.IMAGE_CHIP_ID: n for n, c in CHIP_DEFS.items() if hasattr(c, "IMAGE_CHIP_ID")}
        raise UserError(
            f"{what} was built for {names.get(image.chip_id, image.chip_id)}, not {chip}; "
            "refusing to flash it",
            hints=[f"build the firmware for the {chip} target", "or pick the bundle made for this board"],
        )
    digest_ok = image.stored_digest == image.calc_digest if image.append_digest else None
    info = ImageInfo(image.chip_id, len(image.segments), image.checksum == image.calculate_checksum(),
                     digest_ok, *_app_desc(data))
    if not info.checksum_ok or info.digest_ok is False:
        raise CheckFailed(f"{what}: image checksum or SHA-256 digest is invalid (corrupted image)")
    return info


def _app_desc(data: bytes) -> tuple[str | None, str | None]:
    """esp_app_desc_t sits at the start of the first segment's data (header 24 + segment header 8)."""
    magic, = struct.unpack_from("<I", data, 32) if len(data) >= 36 else (0,)
    if magic != 0xABCD5432 or len(data) < 32 + 112:
        return None, None
    version = data[48:80].split(b"\0")[0].decode(errors="replace")
    name = data[80:112].split(b"\0")[0].decode(errors="replace")
    return name, version


@contextlib.contextmanager
def _quiet() -> Any:
    """esptool prints through its logger; keep image work silent."""
    import contextlib as cl
    import os

    with open(os.devnull, "w") as null, cl.redirect_stdout(null):
        yield


def assemble(app_elf: Path, bootloader: Path, partitions_csv: Path, out_dir: Path, *, chip: str,
             flash_size: str) -> FirmwareImages:
    """bootloader + partition table + otadata + app -> images, merged.bin and flasher_args.json."""
    from esptool.cmds import merge_bin

    parts = parse_partitions(partitions_csv.read_text())
    is_elf = bootloader.suffix == ".elf"
    boot = elf_to_image(bootloader, chip, flash_size) if is_elf else bootloader.read_bytes()
    app = elf_to_image(app_elf, chip, flash_size)
    check_image(boot, chip, "bootloader")
    check_image(app, chip, "app")
    ota = next((p for p in parts if p.subtype == "ota"), None)
    app_slot = next(p for p in parts if p.type == "app")
    blobs = {"bootloader.bin": (BOOTLOADER_OFFSET.get(chip, 0), boot),
             "partition-table.bin": (PARTITION_TABLE_OFFSET, partition_table_bin(parts)),
             "app.bin": (app_slot.offset, app)}
    if ota is not None:
        blobs["ota_data_initial.bin"] = (ota.offset, b"\xff" * ota.size)  # empty otadata: boot ota_0
    for name, (_, data) in blobs.items():
        atomic_write_bytes(out_dir / name, data)
    with _quiet():
        merged = merge_bin([(off, data) for off, data in blobs.values()], chip, None, flash_mode="dio",
                           flash_size=flash_size)
    assert isinstance(merged, bytes)
    atomic_write_bytes(out_dir / "merged.bin", merged)
    images = FirmwareImages(chip, tuple(sorted((off, out_dir / n) for n, (off, _) in blobs.items())),
                            "dio", flash_size, "keep", {n: sha256_file(out_dir / n) for n in blobs})
    write_flasher_args(images, out_dir)
    return images


def write_flasher_args(images: FirmwareImages, out_dir: Path) -> None:
    doc = {
        "flash_settings": {"flash_mode": images.flash_mode, "flash_size": images.flash_size,
                           "flash_freq": images.flash_freq},
        "flash_files": {hex(off): p.relative_to(out_dir).as_posix() for off, p in images.files},
        "extra_esptool_args": {"chip": images.chip, "before": "default_reset", "after": "hard_reset"},
        "llmos_sha256": images.sha256,
    }
    atomic_write_text(out_dir / "flasher_args.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")


def load_flasher_args(folder: Path) -> FirmwareImages:
    """Read ESP-IDF's flasher_args.json (from idf.py build, or written by assemble())."""
    path = folder / "flasher_args.json"
    try:
        doc = json.loads(path.read_text())
        files = tuple(sorted((int(off, 16), folder / rel) for off, rel in doc["flash_files"].items()))
        settings = doc.get("flash_settings", {})
        chip = doc["extra_esptool_args"]["chip"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a usable flasher_args.json ({exc})",
                        hints=["rebuild the firmware (llmos-edge build)",
                               "or point at the ESP-IDF build folder"]) from exc
    return FirmwareImages(chip, files, settings.get("flash_mode", "keep"), settings.get("flash_size", "keep"),
                          settings.get("flash_freq", "keep"), dict(doc.get("llmos_sha256", {})))


def check_images(images: FirmwareImages) -> None:
    """Before touching the port: files exist, hashes match the build, app/bootloader are for this chip."""
    for off, path in images.files:
        if not path.is_file():
            raise UserError(f"firmware image {path} is missing", hints=["rebuild the firmware"])
        want = images.sha256.get(path.name)
        if want and sha256_file(path) != want:
            raise CheckFailed(f"{path.name} changed since it was built (sha256 mismatch); refusing to flash",
                              hints=["rebuild the firmware, or fetch the bundle again"])
        if path.name in ("app.bin", "bootloader.bin") or off in (0x10000, BOOTLOADER_OFFSET.get(images.chip)):
            check_image(path.read_bytes(), images.chip, path.name)
