"""Images are hostile input: crafted archives must be refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmos_edge.bundle import BundleResult, open_bundle, verify_bundle
from llmos_edge.bundle import extract as ex
from llmos_edge.bundle import manifest as mf
from llmos_edge.errors import CheckFailed, UserError

Entry = Callable[[tarfile.TarFile], None]


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))
    add.listed = (name, data)  # type: ignore[attr-defined]  # what a manifest would list for it
    return add


def _special(name: str, kind: bytes, linkname: str = "") -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        tar.addfile(info)
    return add


def _manifest(entries: tuple[Entry, ...]) -> bytes:
    """A well-formed manifest listing every regular file entry (so each hostile case is about the
    entry, not about a broken manifest); normalised names, first occurrence wins."""
    files: dict[str, dict[str, object]] = {}
    for add in entries:
        if hasattr(add, "listed"):
            name, data = add.listed
            while name.startswith("./"):
                name = name[2:]
            files.setdefault(name, {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    return mf.dump({"schema_version": 1, "name": "x", "bundle_version": "1.0.0", "files": files})


def _image(path: Path, *entries: Entry, manifest: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        _file("manifest.json", _manifest(entries) if manifest is None else manifest)(tar)
        for add in entries:
            add(tar)
    return path


BAD = {
    "dotdot": ([_file("../escaped.txt")], "escapes the bundle"),
    "dotdot-nested": ([_file("models/../../escaped.txt")], "escapes the bundle"),
    "absolute": ([_file("/tmp/llmos-absolute-escape.txt")], "absolute path"),
    "symlink-out": ([_special("config/link", tarfile.SYMTYPE, "/etc/passwd")], "is a symlink"),
    "symlink-in": ([_special("config/link", tarfile.SYMTYPE, "../manifest.json")], "is a symlink"),
    "hardlink-out": ([_special("config/hl", tarfile.LNKTYPE, "../../etc/passwd")], "is a hardlink"),
    "hardlink-in": ([_special("config/hl", tarfile.LNKTYPE, "manifest.json")], "is a hardlink"),
    "chardev": ([_special("dev/null", tarfile.CHRTYPE)], "device node"),
    "blockdev": ([_special("dev/sda", tarfile.BLKTYPE)], "device node"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "FIFO"),
    "setuid": ([_file("bin/su", b"#!/bin/sh\n", 0o4755)], "setuid"),
    "setgid": ([_file("bin/sg", b"#!/bin/sh\n", 0o2755)], "setuid/setgid"),
    "duplicate": ([_file("a.txt", b"1"), _file("a.txt", b"2")], "appears twice"),
    "duplicate-dotslash": ([_file("a.txt", b"1"), _file("./a.txt", b"2")], "appears twice"),
    "dot-as-file": ([_file(".")], "not a canonical"),
    "empty-component": ([_file("a//b")], "not a canonical"),
    "file-then-child": ([_file("a", b"1"), _file("a/b", b"2")], "conflict"),
    "second-manifest": ([_file("manifest.json", b"{}")], "appears twice"),
    "folder-not-listed": ([_special("stray", tarfile.DIRTYPE)], "folder the manifest does not list"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_crafted_entry_is_refused_and_nothing_written(case: str, tmp_path: Path) -> None:
    entries, needle = BAD[case]
    img = _image(tmp_path / "work" / f"{case}.tar.gz", *entries)
    with pytest.raises(CheckFailed) as info:
        open_bundle(img)
    assert needle in info.value.message
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "work" / "escaped.txt").exists()
    assert not Path("/tmp/llmos-absolute-escape.txt").exists()
    cached = tmp_path / "cache" / "bundles"
    assert not cached.exists() or not any(cached.iterdir())


def test_verify_refuses_crafted_image(tmp_path: Path) -> None:
    img = _image(tmp_path / "evil.tar.gz", _file("../escaped.txt"))
    with pytest.raises(CheckFailed, match="escapes the bundle"):
        verify_bundle(img, None, allow_unsigned=True)


def test_too_many_entries_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real limit is 100,000 entries; lowered here so the test stays fast. The code path is the same.
    monkeypatch.setattr(ex, "MAX_ENTRIES", 50)
    img = _image(tmp_path / "many.tar.gz", *[_file(f"f/{i}") for i in range(60)])
    with pytest.raises(CheckFailed, match="more than 50 entries"):
        open_bundle(img)


def test_huge_declared_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real limit 64 GiB; lowered to 1 KiB so a small archive exercises the same check.
    monkeypatch.setattr(ex, "MAX_TOTAL_BYTES", 1024)
    img = _image(tmp_path / "big.tar.gz", _file("big.bin", b"\0" * 4096))
    with pytest.raises(CheckFailed, match="expands to more than"):
        open_bundle(img)


@pytest.mark.parametrize("content", [b"", b"not a tarball at all", b"\x1f\x8b\x08\x00garbage"])
def test_not_an_archive(tmp_path: Path, content: bytes) -> None:
    img = tmp_path / "junk.tar.gz"
    img.write_bytes(content)
    with pytest.raises(CheckFailed, match=r"not a readable \.tar\.gz"):
        open_bundle(img)


def test_truncated_image(pristine: tuple[BundleResult, Path], tmp_path: Path) -> None:
    res, pub = pristine
    data = res.image.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckFailed):
        verify_bundle(cut, pub)


def test_open_bundle_caches_by_hash(pristine: tuple[BundleResult, Path], tmp_path: Path) -> None:
    res, _ = pristine
    first = open_bundle(res.image)
    assert first.parent == tmp_path / "cache" / "bundles" and first.name == ex.image_sha256(res.image)
    assert open_bundle(res.image) == first
    assert (first / "manifest.json").read_bytes() == (res.folder / "manifest.json").read_bytes()
    assert open_bundle(res.folder) == res.folder


def test_extracted_modes_are_normalised(pristine: tuple[BundleResult, Path]) -> None:
    folder = open_bundle(pristine[0].image)
    assert (folder / "bin" / "llmos-launch").stat().st_mode & 0o7777 == 0o755
    assert (folder / "manifest.json").stat().st_mode & 0o7777 == 0o644


_PARTS = st.sampled_from(["a", "b", "..", ".", "", "/", "c.txt", "\\", "models"])


@settings(max_examples=int(os.environ.get("LLMOS_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)
@given(names=st.lists(st.lists(_PARTS, min_size=1, max_size=5).map("/".join), min_size=1, max_size=4))
def test_any_accepted_archive_stays_inside(names: list[str], tmp_path: Path) -> None:
    """Property: whatever entry names an archive has, extraction writes only inside its folder."""
    import uuid

    work = tmp_path / uuid.uuid4().hex
    img = _image(work / "img" / "x.tar.gz", *[_file(n, hashlib.sha256(n.encode()).digest()) for n in names])
    try:
        folder = open_bundle(img)
    except CheckFailed:
        return
    except UserError:
        return
    root = folder.resolve()
    for p in folder.rglob("*"):
        assert p.resolve().is_relative_to(root), p
    outside = [p for p in work.rglob("*") if p.is_file() and p != img]
    assert outside == []


def test_dot_slash_archive_from_gnu_tar_is_accepted(tmp_path: Path) -> None:
    """`tar -C folder -czf x.tar.gz .` style names ("./", "./a") are fine."""
    def root_dir(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("./")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)

    folder = open_bundle(_image(tmp_path / "x.tar.gz", root_dir, _file("./config/a.txt", b"hi")))
    assert (folder / "config" / "a.txt").read_bytes() == b"hi"
