"""Encoder quantization on the tiny BERT: int8 (dynamic, per channel) and fp16 (Jetson), scored to fp32."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_edge.errors import UserError
from llmos_edge.stages.evaluate import evaluate_encoder
from llmos_edge.stages.quantize import quantize_encoder
from llmos_edge.toolchains import manager

TEXT = "Edge devices run small models. The capital of France is Paris. Weights use fewer bits."


# Size ratios of model.onnx on this tiny graph (structure dominates its ~100 KB): int8 0.68, fp16 0.74.
@pytest.mark.parametrize(("quant", "min_cos", "max_ratio"), [("int8", 0.9, 0.72), ("fp16", 0.999, 0.8)])
def test_quantized_encoder_is_smaller_and_close_to_fp32(
    tmp_path: Path, tiny_encoder_dir: Path, quant: str, min_cos: float, max_ratio: float
) -> None:
    out = tmp_path / quant
    out.mkdir()
    quantize_encoder(manager.ensure("onnx-optimum", progress=False), tiny_encoder_dir, out, quant=quant)
    ratio = (out / "model.onnx").stat().st_size / (tiny_encoder_dir / "model.onnx").stat().st_size
    assert ratio <= max_ratio, ratio
    if quant == "int8":  # dynamic quantization: integer matmuls, not weight-only dequantize
        assert b"MatMulInteger" in (out / "model.onnx").read_bytes()
    rep = evaluate_encoder(out, tiny_encoder_dir, quant=quant, evaluation_text=TEXT,
                           limits={"min_cosine": min_cos, "require_golden": False}, reference="fp32 export")
    assert rep.failures == [] and rep.cosine_min is not None and rep.cosine_min >= min_cos, rep.to_dict()


def test_int4_encoder_is_refused_with_a_hint(tmp_path: Path, tiny_encoder_dir: Path) -> None:
    with pytest.raises(UserError, match="encoders are built as") as info:
        quantize_encoder(manager.ensure("onnx-optimum", progress=False), tiny_encoder_dir, tmp_path,
                         quant="int4")
    assert info.value.hints
