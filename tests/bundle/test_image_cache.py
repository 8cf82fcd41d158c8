"""The bundle image is cached on what decides its bytes; a warm build copies it instead of compressing.

tests/bundle/conftest.py gives every test its own LLMOS_EDGE_CACHE.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmos_edge.bundle.image import image_key, write_image, write_image_cached
from llmos_edge.cache import list_entries


def _folder(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "bin" / "run").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "run").chmod(0o755)
    (root / "models" / "w.bin").write_bytes(os.urandom(200_000))
    return root


def test_second_write_reuses_identical_bytes(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "b")
    assert write_image_cached(folder, tmp_path / "one.tar.gz", 1700000000) is False
    assert write_image_cached(folder, tmp_path / "two.tar.gz", 1700000000) is True
    write_image(folder, tmp_path / "plain.tar.gz", 1700000000)
    one, two, plain = ((tmp_path / n).read_bytes() for n in ("one.tar.gz", "two.tar.gz", "plain.tar.gz"))
    assert one == two == plain  # the cache never changes what a build produces
    assert [e.stage for e in list_entries()].count("image") == 1  # listed (and pruned) with the stages
    assert not list(tmp_path.glob(".*.tmp"))


def test_key_follows_content_mode_names_and_time(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "b")
    base = image_key(folder, 1)
    assert image_key(folder, 2) != base
    (folder / "bin" / "run").chmod(0o644)
    assert image_key(folder, 1) != base
    (folder / "bin" / "run").chmod(0o755)
    assert image_key(folder, 1) == base
    data = bytearray((folder / "models" / "w.bin").read_bytes())
    data[100_000] ^= 1  # one bit, same size
    (folder / "models" / "w.bin").write_bytes(bytes(data))
    assert image_key(folder, 1) != base
    (folder / "models" / "w.bin").rename(folder / "models" / "w2.bin")
    (folder / "empty").mkdir()
    assert len({image_key(folder, 1), base}) == 2


def test_no_cache_writes_and_stores_nothing(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "b")
    assert write_image_cached(folder, tmp_path / "x.tar.gz", 5, use_cache=False) is False
    assert (tmp_path / "x.tar.gz").is_file()
    assert not [e for e in list_entries() if e.stage == "image"]
