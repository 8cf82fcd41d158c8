"""Minimal Xtensa ELF files for esptool's elf2image (no Xtensa compiler exists on this machine).

The bytes in the sections are not runnable code: the images are structurally valid ESP32/ESP32-S3
images (headers, segments at the chip's real load addresses, checksum, SHA-256, app descriptor) so
esptool image-info, merge-bin, write-flash and verify-flash treat them like real firmware.
"""

from __future__ import annotations

import struct
from pathlib import Path

EM_XTENSA = 0x5E


def build_elf(sections: list[tuple[str, int, bytes]], entry: int) -> bytes:
    names = b"\0" + b"".join(n.encode() + b"\0" for n, _, _ in sections) + b".shstrtab\0"
    data = b""
    offsets = []
    for _, _, body in sections:
        offsets.append(0x34 + len(data))
        data += body + b"\0" * (-len(body) % 4)
    strtab_off = 0x34 + len(data)
    data += names + b"\0" * (-len(names) % 4)
    shoff = 0x34 + len(data)
    shnum = len(sections) + 2
    ident = b"\x7fELF\x01\x01\x01" + b"\0" * 9
    header = struct.pack("<16sHHLLLLLHHHHHH", ident, 2, EM_XTENSA, 1, entry, 0, shoff, 0, 0x34, 0, 0,
                         40, shnum, shnum - 1)
    shdrs = b"\0" * 40
    name_off = 1
    for (name, addr, body), off in zip(sections, offsets, strict=True):
        shdrs += struct.pack("<LLLLLLLLLL", name_off, 1, 0x6, addr, off, len(body), 0, 0, 4, 0)
        name_off += len(name) + 1
    shdrs += struct.pack("<LLLLLLLLLL", name_off, 3, 0, 0, strtab_off, len(names), 0, 0, 1, 0)
    return header + data + shdrs


def app_desc(project: str, version: str) -> bytes:
    """esp_app_desc_t (256 bytes), as ESP-IDF places it at the start of the app's DROM."""
    d = struct.pack("<LL8x32s32s16s16s32s32sHHB3x72x", 0xABCD5432, 0, version.encode(), project.encode(),
                    b"00:00:00", b"Jan  1 2026", b"v5.3-llmos-test", b"\0" * 32, 0, 0xFFFF, 16)
    assert len(d) == 256
    return d


def esp32s3_app_elf(path: Path, project: str = "llmos-host-offload", version: str = "0.1.0") -> Path:
    code = bytes(range(256)) * 8
    path.write_bytes(build_elf([
        (".flash.appdesc", 0x3C000020, app_desc(project, version)),
        (".flash.text", 0x42000020, code),
        (".iram0.text", 0x40374000, code[:512]),
        (".dram0.data", 0x3FC88000, b"llmos" * 20),
    ], entry=0x40374000))
    return path


def esp32s3_bootloader_elf(path: Path) -> Path:
    path.write_bytes(build_elf([
        (".iram_loader.text", 0x403CE000, bytes(range(256)) * 4),
        (".dram0.data", 0x3FCE3000, b"boot" * 16),
    ], entry=0x403CE000))
    return path


def esp32_app_elf(path: Path) -> Path:
    """An app for the classic ESP32: the wrong chip for an ESP32-S3 target."""
    path.write_bytes(build_elf([
        (".flash.appdesc", 0x3F400020, app_desc("other-board", "9.9.9")),
        (".iram0.text", 0x40080000, bytes(range(256)) * 2),
    ], entry=0x40080000))
    return path
