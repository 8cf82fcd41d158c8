"""Open a bundle image safely: the manifest first, then only the files it lists, hash-checked.

Two passes over the stream, and nothing written in the first:
1. read manifest.json and manifest.sig (they come early: entries are sorted, payload folders after
   them), skipping at most PRE_MANIFEST_BYTES of other data; the caller checks the signature here;
2. extract only the entries the manifest lists, each exactly its listed size and sha256, checked
   while streaming, into a temp folder that becomes the cache folder only when complete.
Anything else is refused: unlisted entries, links, devices, '..', absolute paths, duplicates.
A bundle holds only regular files and folders, so links are refused AT ALL (no legitimate use).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..device.base import pid_alive
from ..errors import CheckFailed, UserError
from ..fsutil import ensure_free_space, is_disk_full
from ..paths import cache_root
from . import manifest as mf

MAX_ENTRIES = 100_000
MAX_TOTAL_BYTES = 64 << 30  # 64 GiB uncompressed: far above any edge bundle, far below a disk bomb
PRE_MANIFEST_BYTES = 256 << 20  # data before manifest.json is read (not written); builds put ~1 MiB there
_CHUNK = 1 << 20
_HINT = "do not install this image; rebuild it or fetch it again from a trusted source"

TrustCheck = Callable[[bytes, "bytes | None", dict[str, Any]], None]


@dataclass(frozen=True)
class Head:
    """The image's manifest and signature bytes, read before anything is extracted."""

    manifest: bytes
    signature: bytes | None


def is_image(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz"))


def canonical_name(info: tarfile.TarInfo) -> str | None:
    """The entry's path without a leading "./" (and a directory's trailing "/"); None if not canonical."""
    name = info.name.rstrip("/") if info.isdir() else info.name
    while name.startswith("./"):
        name = name[2:]
    if name in ("", ".") and info.isdir():
        return "."
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return name


def _entry_problem(info: tarfile.TarInfo) -> str | None:
    name = info.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    if "\\" in name or "\0" in name:
        return "contains a backslash or NUL"
    if ".." in PurePosixPath(name).parts:
        return "escapes the bundle with '..'"
    if canonical_name(info) is None:
        return "is not a canonical relative path (empty or '.' components)"
    if info.issym():
        return f"is a symlink (to {info.linkname!r}); bundles may not contain links"
    if info.islnk():
        return f"is a hardlink (to {info.linkname!r}); bundles may not contain links"
    if info.ischr() or info.isblk() or info.isfifo():
        return "is a device node or FIFO"
    if not (info.isreg() or info.isdir()):
        return f"has an unsupported type {info.type!r}"
    if info.mode & 0o7000:
        return f"has setuid/setgid/sticky bits (mode {info.mode:o})"
    return None


@contextlib.contextmanager
def _entries(image: Path) -> Iterator[Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]]:
    """Checked entries in stream order; archive damage and bad entries become CheckFailed."""
    try:
        with tarfile.open(image, mode="r:gz") as tar:
            yield _checked(image, tar)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CheckFailed(f"{image} is not a readable .tar.gz: {exc}", hints=[_HINT]) from exc
    except OSError as exc:
        if is_disk_full(exc):
            raise
        raise UserError(f"cannot read {image}: {exc.strerror or exc}") from exc


def _checked(image: Path, tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    for count, info in enumerate(tar, start=1):
        if count > MAX_ENTRIES:
            raise CheckFailed(f"{image}: more than {MAX_ENTRIES} entries", hints=[_HINT])
        problem = _entry_problem(info)
        if problem:
            raise CheckFailed(f"{image}: archive entry {info.name!r} {problem}", hints=[_HINT])
        yield tar, info, canonical_name(info) or info.name


def _read_small(tar: tarfile.TarFile, info: tarfile.TarInfo, limit: int, image: Path) -> bytes:
    if info.size > limit:
        raise CheckFailed(f"{image}: {info.name} is {info.size} bytes; the limit is {limit}", hints=[_HINT])
    f = tar.extractfile(info)
    return f.read(limit + 1) if f else b""


def read_head(image: Path) -> Head:
    """manifest.json (+ manifest.sig) from the image, reading (never writing) as little as possible."""
    found: dict[str, bytes] = {}
    skipped = 0
    with _entries(image) as entries:
        for tar, info, name in entries:
            if name in mf.NOT_IN_FILES and info.isreg():
                if name in found:
                    raise CheckFailed(f"{image}: archive entry {info.name!r} appears twice", hints=[_HINT])
                found[name] = _read_small(tar, info, mf.MAX_MANIFEST_BYTES, image)
            elif mf.MANIFEST in found:
                break  # the signature, if any, follows the manifest directly
            else:
                skipped += info.size
                if skipped > PRE_MANIFEST_BYTES:
                    break
    if mf.MANIFEST not in found:
        raise CheckFailed(f"{image} has no {mf.MANIFEST} near its start; it is not an llmos-edge image",
                          hints=["pass the .tar.gz written by `llmos-edge build`", _HINT])
    return Head(found[mf.MANIFEST], found.get(mf.SIGNATURE))


def image_sha256(image: Path) -> str:
    h = hashlib.sha256()
    with open(image, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def open_bundle(path: Path, check: TrustCheck | None = None) -> Path:
    """A folder is returned as is; an image is extracted once into a cache folder keyed by its hash.

    check(manifest_bytes, signature_bytes, parsed) runs before any byte is written (verify passes
    the signature check; without one the image is extracted against its own, unverified, manifest).
    """
    if path.is_dir():
        return path
    if not path.exists():
        raise UserError(f"{path} does not exist", hints=["pass a bundle folder or a .tar.gz image"])
    if not is_image(path):
        raise UserError(f"{path} is neither a bundle folder nor a .tar.gz image")
    dest = cache_dir(path)
    if not dest.is_dir():
        head = read_head(path)
        raw = mf.parse(head.manifest, path / mf.MANIFEST)
        if check is not None:
            check(head.manifest, head.signature, raw)
        extract_listed(path, dest, raw, head)
    return dest


def cache_dir(image: Path) -> Path:
    return cache_root() / "bundles" / image_sha256(image)


def extract_listed(image: Path, dest: Path, raw: dict[str, Any], head: Head) -> None:
    """Write exactly the manifest's files (sizes and hashes checked while streaming) into dest."""
    files: dict[str, dict[str, Any]] = raw["files"]
    bad = sorted(rel for rel in files if mf.bad_relpath(rel))
    if bad:
        raise CheckFailed(f"{image}: the manifest lists paths outside the bundle: {bad[:5]}", hints=[_HINT])
    total = sum(int(e["size"]) for e in files.values())
    if total > MAX_TOTAL_BYTES:
        raise CheckFailed(f"{image}: expands to more than {MAX_TOTAL_BYTES >> 30} GiB", hints=[_HINT])
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(dest.parent)
    ensure_free_space(dest.parent, total, f"extracting {image.name}")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    try:
        _Extraction(image, tmp, files, head).run()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():
            raise
        # another process finished the same image first: its copy is as good as ours


def sweep_partials(folder: Path) -> None:
    """Remove temp folders of extractions whose process is gone (a kill -9 leaves them behind)."""
    for p in folder.glob(".*.partial"):
        try:
            pid = int(p.name.rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


class _Extraction:
    """Pass 2: one walk over the stream, writing listed files only."""

    def __init__(self, image: Path, root: Path, files: dict[str, dict[str, Any]], head: Head) -> None:
        self.image, self.root, self.files, self.head = image, root, files, head
        self.dirs = {str(p) for rel in files for p in PurePosixPath(rel).parents if str(p) != "."}
        self.seen: set[str] = set()

    def refuse(self, info: tarfile.TarInfo, problem: str) -> CheckFailed:
        return CheckFailed(f"{self.image}: archive entry {info.name!r} {problem}", hints=[_HINT])

    def run(self) -> None:
        with _entries(self.image) as entries:
            for tar, info, name in entries:
                self.entry(tar, info, name)
        missing = sorted(set(self.files) - self.seen)
        if missing:
            raise CheckFailed(f"{self.image}: {len(missing)} listed files are missing from the image, "
                              f"e.g. {missing[:5]}", hints=[_HINT])

    def entry(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        try:
            self._entry(tar, info, name)
        except OSError as exc:
            if is_disk_full(exc):
                raise
            # e.g. a file entry "a" and a listed "a/b": entries that contradict each other
            raise self.refuse(info, f"conflicts with another entry while extracting: {exc}") from exc

    def _entry(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        if info.isdir():
            if name != "." and name not in self.dirs:
                raise self.refuse(info, "is a folder the manifest does not list")
            (self.root / name).mkdir(mode=0o755, parents=True, exist_ok=True)
            return
        if name in self.seen:
            raise self.refuse(info, "appears twice")
        self.seen.add(name)
        if name in mf.NOT_IN_FILES:
            self.head_file(tar, info, name)
            return
        entry = self.files.get(name)
        if entry is None:
            raise self.refuse(info, "is not listed in the manifest")
        if info.size != entry["size"]:
            raise self.refuse(info, f"is {info.size} bytes; the manifest says {entry['size']}")
        src = tar.extractfile(info)
        if src is None:
            raise self.refuse(info, "cannot be read")
        self.copy(src, info, name, int(entry["size"]), str(entry["sha256"]))

    def head_file(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        want = self.head.manifest if name == mf.MANIFEST else self.head.signature
        if want is None or _read_small(tar, info, mf.MAX_MANIFEST_BYTES, self.image) != want:
            raise self.refuse(info, "differs from the copy read (and checked) before extraction")
        with self.write_new(self.root / name, 0o644) as out:
            out.write(want)

    def write_new(self, path: Path, mode: int) -> IO[bytes]:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        return os.fdopen(fd, "wb")

    def copy(self, src: IO[bytes], info: tarfile.TarInfo, name: str, size: int, sha256: str) -> None:
        h, written = hashlib.sha256(), 0
        with self.write_new(self.root / name, 0o755 if info.mode & 0o100 else 0o644) as out:
            while chunk := src.read(min(_CHUNK, size - written + 1)):
                written += len(chunk)
                if written > size:
                    raise self.refuse(info, f"holds more than the {size} bytes the manifest lists")
                h.update(chunk)
                out.write(chunk)
        if written != size:
            raise self.refuse(info, f"ends after {written} of {size} bytes")
        if h.hexdigest() != sha256:
            raise self.refuse(info, "does not match its sha256 in the manifest")
