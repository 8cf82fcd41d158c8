"""End to end on the real SmolLM2-135M-Instruct (slow: ~10 min cold, seconds when stage-cached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_edge.build_model import build_model
from llmos_edge.plan import make_plan
from llmos_edge.spec import load_recipe, load_target
from llmos_edge.stages.evaluate import generate
from llmos_edge.stages.model_dir import model_size_bytes

pytestmark = pytest.mark.slow


def test_rpi5_int4_build_size_answer_and_perplexity() -> None:
    plan = make_plan(load_target("rpi5"), load_recipe("smollm2-135m-instruct"))
    assert plan.quant == "int4"
    build = build_model(plan, progress=False)
    assert model_size_bytes(build.model_dir) <= 100_000_000
    q = build.report["quality"]
    assert q["passed"] and q["perplexity"] and q["reference_perplexity"]
    assert 1.0 <= q["perplexity_ratio"] <= plan.recipe.quality.max_perplexity_ratio
    assert "dequantized GGUF" in q["reference"]
    answer, stopped, _ = generate(build.model_dir, "What is the capital of France?", max_tokens=64)
    assert "Paris" in answer and stopped
    assert build.report["toolchain_lock"]["name"] == "onnx-genai"


def test_shared_fixture_is_the_int4_build(smollm2_int4_dir: Path) -> None:
    assert (smollm2_int4_dir / "llmos_model.json").is_file()
    assert model_size_bytes(smollm2_int4_dir) <= 100_000_000
