"""The plan resolves every choice and refuses impossible builds before any work."""

from __future__ import annotations

import pytest

from llmos_edge import spec
from llmos_edge.errors import UserError
from llmos_edge.plan import make_plan

SMOL = "smollm2-135m-instruct"


def test_default_plan_for_rpi5() -> None:
    plan = make_plan(spec.load_target("rpi5"), spec.load_recipe(SMOL))
    assert (plan.format, plan.quant, plan.block_size, plan.accuracy_level) == ("onnx-genai", "int4", 32, 4)
    assert plan.toolchain == "onnx-genai"
    assert plan.stages == ("fetch", "prepare", "export", "quantize", "evaluate", "bundle")
    assert plan.estimated_model_mb is not None and plan.estimated_model_mb <= 100
    assert any("dequantized GGUF" in n for n in plan.notes)


def test_fp32_skips_quantize_stage() -> None:
    plan = make_plan(spec.load_target("host"), spec.load_recipe(SMOL), quant="fp32")
    assert "quantize" not in plan.stages


def test_cli_quant_beats_recipe_and_target() -> None:
    recipe = spec.load_recipe("all-minilm-l6-v2")
    assert make_plan(spec.load_target("rpi5"), recipe).quant == "int8"  # recipe beats target default
    assert make_plan(spec.load_target("jetson-orin-nano"), recipe).quant == "fp16"  # per-target override
    assert make_plan(spec.load_target("rpi5"), recipe, quant="fp32").quant == "fp32"


def test_encoder_gets_plain_onnx_and_optimum() -> None:
    plan = make_plan(spec.load_target("rpi5"), spec.load_recipe("all-minilm-l6-v2"))
    assert (plan.format, plan.toolchain) == ("onnx", "onnx-optimum")


def test_armv7_refused_with_reason() -> None:
    with pytest.raises(UserError, match="no wheel") as info:
        make_plan(spec.load_target("rpi3-armv7"), spec.load_recipe(SMOL))
    assert any("64-bit" in h for h in info.value.hints)


def test_model_larger_than_ram_refused() -> None:
    big = spec.load_recipe(SMOL).model_copy(update={"params_m": 7000.0})
    with pytest.raises(UserError, match="RAM"):
        make_plan(spec.load_target("rpi4"), big, quant="fp32")


def test_unsupported_quant_and_format_refused() -> None:
    with pytest.raises(UserError, match="fp16"):
        make_plan(spec.load_target("rpi5"), spec.load_recipe(SMOL), quant="fp16")
    with pytest.raises(UserError, match="tflite"):
        make_plan(spec.load_target("jetson-orin-nano"), spec.load_recipe(SMOL), format="tflite")
    with pytest.raises(UserError, match="int4 is not offered"):
        make_plan(spec.load_target("rpi5"), spec.load_recipe("all-minilm-l6-v2"), quant="int4")
