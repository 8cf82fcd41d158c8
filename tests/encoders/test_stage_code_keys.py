"""Stage cache keys change when the code that produces the stage changes (worker scripts, stage modules)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmos_edge import cache

PKG = Path(cache.__file__).resolve().parent


def _key(stage: str) -> str:
    return cache.stage_key(stage, {"prepare": "a"}, {"quant": "int8"}, "lock")


def test_every_listed_stage_file_exists() -> None:
    """A renamed module would silently drop out of the key: every STAGE_CODE entry must exist."""
    missing = [f"{stage}: {rel}" for stage, files in cache.STAGE_CODE.items() for rel in files
               if not (PKG / rel).is_file()]
    assert missing == []
    assert {"prepare", "export", "quantize", "evaluate"} <= set(cache.STAGE_CODE)


def test_explicit_code_files_change_the_key(tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text("print('v1')\n")
    first = cache.stage_key("export", {}, {}, None, code=[worker])
    assert first == cache.stage_key("export", {}, {}, None, code=[worker])
    worker.write_text("print('v2')\n")
    assert cache.stage_key("export", {}, {}, None, code=[worker]) != first
    worker.write_text("print('v1')\n")
    assert cache.stage_key("export", {}, {}, None, code=[worker]) == first, "content, not mtime, decides"


@pytest.fixture()
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the package sources (other sessions run the real files: never edit those)."""
    copy = tmp_path / "llmos_edge"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "_PKG", copy)
    return copy


@pytest.mark.parametrize(
    ("edited", "changes", "keeps"),
    [
        ("toolchains/workers/optimum_worker.py", {"export", "quantize"}, {"evaluate"}),
        ("toolchains/workers/genai_worker.py", {"prepare", "export", "quantize"}, {"evaluate"}),
        ("stages/quantize.py", {"quantize"}, {"prepare", "export", "evaluate"}),
        ("stages/evaluate.py", {"evaluate"}, {"prepare", "export", "quantize"}),
        ("stages/export.py", {"prepare", "export", "quantize"}, {"evaluate"}),
    ],
)
def test_editing_a_stage_file_changes_only_its_stages(
    package_copy: Path, edited: str, changes: set[str], keeps: set[str]
) -> None:
    before = {s: _key(s) for s in changes | keeps}
    with (package_copy / edited).open("a") as f:
        f.write("\n# edited\n")
    after = {s: _key(s) for s in changes | keeps}
    assert {s for s in before if before[s] != after[s]} == changes
