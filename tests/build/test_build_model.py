"""build_model on a tiny real Llama: stages, cache reuse, changed quant, disk space, gate failure."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.build_model import build_model
from llmos_edge.errors import CheckFailed, UserError
from llmos_edge.plan import make_plan
from llmos_edge.spec import load_target
from llmos_edge.spec.models import Recipe

EVAL = "The capital of France is Paris. Edge devices run small language models. " * 4


def _plan(hf: Path, quant: str, **quality: Any) -> Any:
    recipe = Recipe.model_validate(
        {
            "schema_version": 1,
            "name": "tiny-llama",
            "task": "text-generation",
            "source": {"kind": "local", "path": str(hf)},
            "context_length": 256,
            "evaluation_text": EVAL,
            "quality": {"max_perplexity_ratio": 1.5, "require_golden": False, **quality},
            "golden": [
                {"prompt": "What is the capital of France?", "expect_contains": ["Paris"], "max_tokens": 4}
            ],
        }
    )
    q: Any = quant
    return make_plan(load_target("host"), recipe, quant=q)


def _hits(report: dict[str, Any]) -> dict[str, bool | None]:
    return {s["stage"]: s["cache_hit"] for s in report["stages"]}


def test_cold_warm_and_changed_quant(private_cache: Path, tiny_llama_hf: Path) -> None:
    cold = build_model(_plan(tiny_llama_hf, "int4"), progress=False)
    assert _hits(cold.report) == {"fetch": None, "export": False, "quantize": False, "evaluate": False}
    desc = (cold.model_dir / "llmos_model.json").read_text()
    assert '"quant": "int4"' in desc and cold.reference_dir is not None
    assert cold.report["toolchain_lock"]["packages"]["onnxruntime-genai"] == "0.18.0"
    assert cold.report["quality"]["perplexity_ratio"] < 1.5
    assert cold.report["sizes"]["model_bytes"] < cold.report["sizes"]["reference_bytes"]

    t0 = time.monotonic()
    warm = build_model(_plan(tiny_llama_hf, "int4"), progress=False)
    assert time.monotonic() - t0 < 2.0
    assert set(_hits(warm.report).values()) <= {True, None} and warm.model_dir == cold.model_dir

    int8 = build_model(_plan(tiny_llama_hf, "int8"), progress=False)
    assert _hits(int8.report) == {"fetch": None, "export": True, "quantize": False, "evaluate": False}
    assert int8.model_dir != cold.model_dir

    again = build_model(_plan(tiny_llama_hf, "int4"), no_cache=True, progress=False)
    assert _hits(again.report)["quantize"] is False


def test_quality_gate_failure_raises_table(private_cache: Path, tiny_llama_hf: Path) -> None:
    with pytest.raises(CheckFailed) as ei:
        build_model(_plan(tiny_llama_hf, "fp32", max_perplexity=1.0, require_golden=True), progress=False)
    text = ei.value.render()
    assert ei.value.exit_code == 4
    assert "perplexity" in text and "FAIL" in text and "contains Paris" in text


def test_unsupported_architecture(private_cache: Path, tiny_llama_hf: Path, tmp_path: Path) -> None:
    """A plan made without reading the source (make_plan alone) is still refused right after fetch,
    before the toolchain runs: the architecture check is part of the build, not only of `plan`."""
    hf = tmp_path / "hf"
    shutil.copytree(tiny_llama_hf, hf)
    cfg = (hf / "config.json").read_text().replace("LlamaForCausalLM", "FancyNewForCausalLM")
    (hf / "config.json").write_text(cfg)
    with pytest.raises(UserError, match="'FancyNewForCausalLM' has no onnx-genai exporter") as ei:
        build_model(_plan(hf, "int4"), progress=False)
    assert "LlamaForCausalLM" in ei.value.hints[0]
    assert not (private_cache / "stages" / "export").exists()  # refused before any export started


def test_not_enough_disk_space(private_cache: Path, tiny_llama_hf: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mount.stderr.decode().strip()}")
    try:
        stages = small / "stages"
        (private_cache / "stages").symlink_to(stages, target_is_directory=True)
        stages.mkdir()
        with pytest.raises(UserError, match="not enough disk space"):
            build_model(_plan(tiny_llama_hf, "int4"), progress=False)
        leftovers = [p for p in stages.rglob("*") if p.is_file()]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
