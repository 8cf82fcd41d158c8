"""`llmos_edge.build()` end to end: recipe -> toolchain -> model -> gate -> signed, reproducible bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import llmos_edge
from llmos_edge.bundle import generate_keys, verify_bundle
from llmos_edge.errors import CheckFailed, UserError
from tests.fixtures_models import tiny_llama_hf_dir

EVAL = "The quick brown fox jumps over the lazy dog. " * 20


def _recipe(folder: Path, name: str, *, quality: str = "max_perplexity_ratio = 1.5") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(
        f'schema_version = 1\ntask = "text-generation"\nparams_m = 0.2\ncontext_length = 128\n'
        f'evaluation_text = "{EVAL}"\n'
        f'[source]\nkind = "local"\npath = "{tiny_llama_hf_dir()}"\n'
        f"[quality]\nrequire_golden = false\n{quality}\n"
    )


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _recipe(tmp_path / "recipes", "tiny")
    _recipe(tmp_path / "recipes", "tiny-strict", quality="max_perplexity = 1.0")
    monkeypatch.setenv("LLMOS_EDGE_RECIPES_PATH", str(tmp_path / "recipes"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    generate_keys(tmp_path / "sign")
    return tmp_path


def _build(env: Path, out: str, **kw: object) -> llmos_edge.BuildResult:
    result: llmos_edge.BuildResult = llmos_edge.build(
        "host", "tiny", out=env / out, signing_key=env / "sign.key", wheels=False, progress=False, **kw
    )
    return result


def _cli_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmos_edge", "build", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=900,
    )


def test_build_makes_a_verified_reproducible_bundle(env: Path) -> None:
    first = _build(env, "a")
    assert (first.out_dir / "build-report.json").is_file()
    manifest = verify_bundle(first.image, env / "sign.pub")
    assert manifest.raw["recipe"] == "tiny" and manifest.raw["target"] == "host"
    assert manifest.raw["toolchain_lock"], "the toolchain lock must be recorded in the manifest"
    assert manifest.raw["quality_report"]["passed"] is True
    assert first.report["model"]["quality"]["perplexity_ratio"] <= 1.5

    second = _build(env, "b")
    assert all(s.get("cache_hit") for s in second.report["model"]["stages"] if s["stage"] != "fetch"), (
        second.report["model"]["stages"]
    )
    assert first.image.read_bytes() == second.image.read_bytes(), "same inputs must give the same image"


def test_changed_quant_changes_only_quantize_and_later_keys(env: Path) -> None:
    """Keys, not hit flags: the shared stage cache may already hold either build from earlier runs."""
    first = {s["stage"]: s["key"] for s in _build(env, "int4").report["model"]["stages"]}
    second = {s["stage"]: s["key"] for s in _build(env, "int8", quant="int8").report["model"]["stages"]}
    same = {stage for stage in first if first[stage] == second.get(stage)}
    assert {"fetch", "export"} <= same, (first, second)
    assert "quantize" not in same and "evaluate" not in same, (first, second)


def test_quality_gate_failure_leaves_no_output(env: Path) -> None:
    out = env / "strict"
    with pytest.raises(CheckFailed) as info:
        llmos_edge.build(
            "host", "tiny-strict", out=out, signing_key=env / "sign.key", wheels=False, progress=False
        )
    assert "perplexity" in info.value.message
    assert not out.exists(), "a failed build must not leave an output that looks finished"
    assert not list(env.glob(".strict.*")), "no partial folder may be left behind"


def test_quality_gate_failure_via_cli_exit_4(env: Path) -> None:
    result = _cli_build(
        "--recipe", "tiny-strict", "--no-wheels", "--key", str(env / "sign.key"), "--out", str(env / "cli")
    )
    assert result.returncode == 4, result.stderr
    assert "perplexity" in result.stderr and "Traceback" not in result.stderr
    assert not (env / "cli").exists()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="needs root to mount a small tmpfs that fills up",
)
def test_not_enough_disk_space_is_refused_cleanly(env: Path) -> None:
    small = env / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(UserError, match="not enough disk space"):
            llmos_edge.build(
                "host", "tiny", out=small / "out", signing_key=env / "sign.key", wheels=False, progress=False
            )
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_build_json_output(env: Path) -> None:
    result = _cli_build(
        "--recipe",
        "tiny",
        "--no-wheels",
        "--json",
        "--key",
        str(env / "sign.key"),
        "--out",
        str(env / "json"),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["bundle"]["signed"] is True and len(data["bundle"]["image_sha256"]) == 64
    assert data["plan"]["quant"] == "int4"
