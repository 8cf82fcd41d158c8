"""Open a bundle image safely: check every archive entry, then extract with filter="data".

A bundle holds only regular files and folders, so links are refused AT ALL (not only links that
point out of the bundle): there is no legitimate use, and it closes the hardlink-to-symlink tricks.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import CheckFailed, UserError
from ..fsutil import atomic_dir, ensure_free_space, is_disk_full
from ..paths import cache_root

MAX_ENTRIES = 100_000
MAX_TOTAL_BYTES = 64 << 30  # 64 GiB uncompressed: far above any edge bundle, far below a disk bomb
_HINT = "do not install this image; rebuild it or fetch it again from a trusted source"


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


def check_members(image: Path) -> list[tarfile.TarInfo]:
    """Every entry, checked; raises CheckFailed naming the first bad entry."""
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(image, mode="r:*") as tar:
            for info in tar:
                members.append(info)
                if len(members) > MAX_ENTRIES:
                    raise CheckFailed(f"{image}: more than {MAX_ENTRIES} entries", hints=[_HINT])
                problem = _entry_problem(info)
                if problem:
                    raise CheckFailed(f"{image}: archive entry {info.name!r} {problem}", hints=[_HINT])
                norm = canonical_name(info) or info.name
                if norm in seen and not info.isdir():
                    raise CheckFailed(f"{image}: archive entry {info.name!r} appears twice", hints=[_HINT])
                seen.add(norm)
                total += info.size
                if total > MAX_TOTAL_BYTES:
                    raise CheckFailed(f"{image}: expands to more than {MAX_TOTAL_BYTES >> 30} GiB",
                                      hints=[_HINT])
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CheckFailed(f"{image} is not a readable .tar.gz: {exc}", hints=[_HINT]) from exc
    except OSError as exc:
        raise UserError(f"cannot read {image}: {exc.strerror or exc}") from exc
    return members


def image_sha256(image: Path) -> str:
    h = hashlib.sha256()
    with open(image, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def extract_image(image: Path, dest: Path) -> None:
    """Extract into dest (which must not exist); only after every entry passed check_members."""
    members = check_members(image)
    ensure_free_space(dest.parent, sum(m.size for m in members), f"extracting {image.name}")
    with atomic_dir(dest) as tmp, tarfile.open(image, mode="r:*") as tar:
        try:
            tar.extractall(tmp, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise CheckFailed(f"{image}: {exc}", hints=[_HINT]) from exc
        except OSError as exc:
            if is_disk_full(exc):
                raise
            # e.g. a file entry "a" followed by "a/b": entries that contradict each other
            raise CheckFailed(f"{image}: entries conflict while extracting: {exc}", hints=[_HINT]) from exc


def open_bundle(path: Path) -> Path:
    """A folder is returned as is; an image is extracted once into a cache folder keyed by its hash."""
    if path.is_dir():
        return path
    if not path.exists():
        raise UserError(f"{path} does not exist", hints=["pass a bundle folder or a .tar.gz image"])
    if not is_image(path):
        raise UserError(f"{path} is neither a bundle folder nor a .tar.gz image")
    dest = cache_root() / "bundles" / image_sha256(path)
    if not dest.is_dir():
        extract_image(path, dest)
    return dest
