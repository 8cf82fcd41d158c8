"""A byte-reproducible .tar.gz of a bundle folder.

Same tree -> same bytes: entries sorted, mtime = SOURCE_DATE_EPOCH, owner 0/0 with empty names,
modes normalised to 0644/0755, and a gzip header with mtime 0 and no file name.
The deflate level is chosen per entry (already-compressed or encrypted files are stored, weights
get a fast level, text the best one): one gzip stream whose parts are joined at full flushes,
as pigz does, so any gunzip reads it and the same inputs still give the same bytes.
"""

from __future__ import annotations

import os
import struct
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from ..errors import UserError

_STORED = (".enc", ".whl", ".zip", ".gz", ".xz", ".zst", ".bz2")
_WEIGHTS = (".onnx", ".data", ".tflite", ".bin", ".safetensors", ".gguf")


def level_for(name: str) -> int:
    if name.endswith(_STORED):
        return 0
    return 1 if name.endswith(_WEIGHTS) else 9


class _GzipWriter:
    """Minimal deterministic gzip writer whose deflate level can change between tar entries."""

    def __init__(self, raw: BinaryIO, level: int = 9) -> None:
        self._raw, self._crc, self._size = raw, 0, 0
        raw.write(b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff")  # no name, mtime 0, OS unknown
        self._level = level
        self._comp = zlib.compressobj(level, zlib.DEFLATED, -15)

    def set_level(self, level: int) -> None:
        if level != self._level:
            self._raw.write(self._comp.flush(zlib.Z_FULL_FLUSH))
            self._level, self._comp = level, zlib.compressobj(level, zlib.DEFLATED, -15)

    def write(self, data: bytes) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._raw.write(self._comp.compress(data))
        return len(data)

    def tell(self) -> int:
        return self._size

    def finish(self) -> None:
        self._raw.write(self._comp.flush(zlib.Z_FINISH))
        self._raw.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


def _entries(folder: Path) -> list[Path]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            paths.append(Path(dirpath) / name)
    return sorted(paths, key=lambda p: p.relative_to(folder).as_posix())


def _tarinfo(path: Path, arcname: str, mtime: int) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(arcname)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_symlink() or not (path.is_dir() or path.is_file()):
        raise UserError(f"{path} is a link or special file; a bundle holds only files and folders")
    if path.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def write_image(folder: Path, image: Path, mtime: int) -> None:
    """Pack folder into image (written to a temp name, renamed when complete)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    tmp = image.with_name(f".{image.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            gz = _GzipWriter(raw)
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for path in _entries(folder):
                    info = _tarinfo(path, path.relative_to(folder).as_posix(), mtime)
                    gz.set_level(9 if info.isdir() else level_for(info.name))
                    if info.isdir():
                        tar.addfile(info)
                    else:
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                gz.set_level(9)  # tar's end-of-archive blocks
            gz.finish()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, image)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def image_key(folder: Path, mtime: int) -> str:
    """What decides the image's bytes: every entry's name, type, mode, size and content, the time, this code.

    Hashing the folder (~0.3 s for 150 MB) replaces compressing it again (~6 s at these levels).
    """
    import hashlib
    import json

    from ..cache import code_hash
    from ..fsutil import sha256_file

    h = hashlib.sha256(json.dumps({"mtime": mtime, "code": code_hash([Path(__file__)])}).encode())
    for path in _entries(folder):
        info = _tarinfo(path, path.relative_to(folder).as_posix(), mtime)
        digest = sha256_file(path) if info.isreg() else ""
        row = [info.name, int(info.type == tarfile.DIRTYPE), info.mode, info.size, digest]
        h.update(json.dumps(row).encode())
    return h.hexdigest()[:32]


def write_image_cached(folder: Path, image: Path, mtime: int, use_cache: bool = True) -> bool:
    """write_image, reusing a byte-identical image from the stage cache; True if it was reused."""
    import shutil

    from ..cache import run_stage

    if not use_cache:
        write_image(folder, image, mtime)
        return False

    def produce(tmp: Path) -> None:
        write_image(folder, tmp / "image.tar.gz", mtime)

    entry, hit = run_stage("image", image_key(folder, mtime), produce, describe={"bundle": folder.name})
    tmp = image.with_name(f".{image.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(entry / "image.tar.gz", tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, image)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hit

