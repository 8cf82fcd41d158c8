"""The input-keyed cache behind the QEMU image steps, and the reproducible initrd writer."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ci.qemu.cache import Timings, cache_key, cached_entry
from ci.qemu.cpio import write_newc_gz


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_EDGE_CACHE", str(tmp_path / "cache"))


def test_entry_is_built_once_then_served_from_cache() -> None:
    calls: list[Path] = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "artifact").write_text("x")

    t = Timings()
    first = cached_entry("step", {"a": 1}, build, t)
    second = cached_entry("step", {"a": 1}, build, t)
    assert first == second and len(calls) == 1 and (first / "artifact").read_text() == "x"
    assert [c for _, _, c in t.steps] == [False, True]
    assert cached_entry("step", {"a": 2}, build) != first and len(calls) == 2  # other inputs, other entry
    cached_entry("step", {"a": 1}, build, refresh=True)
    assert len(calls) == 3


def test_failed_build_leaves_no_entry() -> None:
    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("partial")
        raise RuntimeError("debootstrap died")

    with pytest.raises(RuntimeError):
        cached_entry("step", {"b": 1}, broken)
    root = Path(str(cache_key("step", {"b": 1})))
    from ci.qemu.cache import qemu_cache

    assert not (qemu_cache() / root).exists()
    assert not [p for p in qemu_cache().iterdir() if p.is_dir()]


def test_cache_key_depends_on_every_input_not_on_order() -> None:
    assert cache_key("rootfs", {"a": 1, "b": [1, 2]}) == cache_key("rootfs", {"b": [1, 2], "a": 1})
    assert cache_key("rootfs", {"a": 1}) != cache_key("rootfs", {"a": 2})
    assert cache_key("rootfs", {"a": 1}) != cache_key("kernel", {"a": 1})


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    i = 0
    while True:
        assert data[i:i + 6] == b"070701"
        fields = [int(data[i + 6 + 8 * k:i + 14 + 8 * k], 16) for k in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = data[i + 110:i + 110 + namesize - 1].decode()
        i += 110 + namesize
        i += -i % 4
        body = data[i:i + filesize]
        i += filesize + (-(i + filesize) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (fields[1], body)


def test_initrd_archive_is_reproducible_and_readable(tmp_path: Path) -> None:
    files = {"init": (b"#!/bin/sh\n", 0o755), "lib/modules/kernel/x.ko": (b"\x7fELF" * 3, 0o644)}
    write_newc_gz(files, tmp_path / "a.gz")
    write_newc_gz(dict(reversed(files.items())), tmp_path / "b.gz")
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    entries = _read_newc(gzip.decompress((tmp_path / "a.gz").read_bytes()))
    assert entries["init"] == (0o100755, b"#!/bin/sh\n")
    assert entries["lib/modules/kernel/x.ko"][1] == b"\x7fELF" * 3
    assert entries["lib/modules"][0] == 0o040755  # parent folders are created
