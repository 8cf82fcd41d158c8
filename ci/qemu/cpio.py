"""A reproducible gzip'd cpio (newc) writer for the initrd: no cpio binary, fixed mtimes and owners."""

from __future__ import annotations

import gzip
import io
from pathlib import Path, PurePosixPath

_DIR, _FILE = 0o040000, 0o100000


def _entry(buf: io.BytesIO, ino: int, name: str, mode: int, data: bytes) -> None:
    nlink = 2 if mode & _DIR else 1
    fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    buf.write(b"070701" + "".join(f"{v:08x}" for v in fields).encode())
    buf.write(name.encode() + b"\0")
    buf.write(b"\0" * (-buf.tell() % 4))
    buf.write(data)
    buf.write(b"\0" * (-buf.tell() % 4))


def write_newc_gz(files: dict[str, tuple[bytes, int]], out: Path) -> None:
    """Write `files` ({relpath: (data, perm)}) plus their parent dirs as a gzip'd newc archive."""
    dirs = sorted({str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."})
    buf = io.BytesIO()
    ino = 1
    for d in dirs:
        _entry(buf, ino, d, _DIR | 0o755, b"")
        ino += 1
    for name in sorted(files):
        data, perm = files[name]
        _entry(buf, ino, name, _FILE | perm, data)
        ino += 1
    _entry(buf, 0, "TRAILER!!!", 0, b"")
    buf.write(b"\0" * (-buf.tell() % 512))
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue())
    tmp.replace(out)
