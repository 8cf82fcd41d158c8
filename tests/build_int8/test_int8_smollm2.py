"""int8 on the real SmolLM2-135M-Instruct passes the quality gate (slow: minutes cold, seconds when
the prepare/export stages are in the stage cache)."""

from __future__ import annotations

import pytest

from llmos_edge.build_model import build_model
from llmos_edge.plan import make_plan
from llmos_edge.spec import load_recipe, load_target
from llmos_edge.stages.evaluate import generate
from llmos_edge.stages.model_dir import model_size_bytes

pytestmark = pytest.mark.slow


def test_rpi4_int8_passes_gate_with_paris_and_end_of_turn() -> None:
    plan = make_plan(load_target("rpi4"), load_recipe("smollm2-135m-instruct"), quant="int8")
    build = build_model(plan, progress=False)  # raises CheckFailed (the gate's table) when refused
    q = build.report["quality"]
    assert q["passed"] and q["quant"] == "int8"
    assert q["perplexity_ratio"] <= plan.recipe.quality.max_perplexity_ratio
    assert all(g["contains_expected"] and g["stopped_at_end_of_turn"] for g in q["golden"])
    size = model_size_bytes(build.model_dir)
    assert size <= 160_000_000 and size < 0.3 * build.report["sizes"]["reference_bytes"]
    answer, stopped, _ = generate(build.model_dir, "What is the capital of France?", max_tokens=64)
    assert "Paris" in answer and stopped
