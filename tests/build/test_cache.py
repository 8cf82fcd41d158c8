"""Stage cache: keys, atomic entries, ls/prune; and build_model's reuse on a tiny real model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmos_edge import cache


def test_key_changes_with_inputs_options_and_toolchain() -> None:
    base = cache.stage_key("quantize", {"prepare": "a"}, {"quant": "int4"}, "lock1")
    assert base == cache.stage_key("quantize", {"prepare": "a"}, {"quant": "int4"}, "lock1")
    others = {
        cache.stage_key("quantize", {"prepare": "b"}, {"quant": "int4"}, "lock1"),
        cache.stage_key("quantize", {"prepare": "a"}, {"quant": "int8"}, "lock1"),
        cache.stage_key("quantize", {"prepare": "a"}, {"quant": "int4"}, "lock2"),
        cache.stage_key("export", {"prepare": "a"}, {"quant": "int4"}, "lock1"),
    }
    assert base not in others and len(others) == 4


def test_miss_then_hit_then_no_cache(private_cache: Path) -> None:
    calls: list[Path] = []

    def produce(out: Path) -> dict[str, int]:
        calls.append(out)
        (out / "x.bin").write_bytes(b"1" * 10)
        return {"n": len(calls)}

    p1, hit1 = cache.run_stage("export", "k1", produce)
    p2, hit2 = cache.run_stage("export", "k1", produce)
    assert (hit1, hit2) == (False, True) and p1 == p2 and len(calls) == 1
    assert (p1 / "x.bin").read_bytes() == b"1" * 10
    _, hit3 = cache.run_stage("export", "k1", produce, no_cache=True)
    assert hit3 is False and len(calls) == 2 and cache.read_meta(p1)["n"] == 2


def test_failed_stage_leaves_nothing_that_looks_complete(private_cache: Path) -> None:
    def produce(out: Path) -> None:
        (out / "model.onnx").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        cache.run_stage("quantize", "k2", produce)
    stage_dir = private_cache / "stages" / "quantize"
    assert not (stage_dir / "k2").exists()
    assert list(stage_dir.iterdir()) == []  # the temp folder is gone too
    assert cache.list_entries() == []


def test_ls_and_prune(private_cache: Path) -> None:
    def produce(out: Path) -> None:
        (out / "q.json").write_text("{}")

    for key in ("a", "b"):
        cache.run_stage("evaluate", key, produce)
    entries = cache.list_entries()
    assert {(e.stage, e.key) for e in entries} == {("evaluate", "a"), ("evaluate", "b")}
    assert all(e.size_bytes > 0 for e in entries)
    assert cache.prune(older_than_days=1) == []
    removed = cache.prune(everything=True, dry_run=True)
    assert len(removed) == 2 and len(cache.list_entries()) == 2
    old = time.time() - 3 * 86400
    import os

    os.utime(entries[0].path / cache.META, (old, old))
    assert [e.key for e in cache.prune(older_than_days=2)] == [entries[0].key]
    assert [e.key for e in cache.list_entries()] == [entries[1].key]
