"""Decoder export + quantization through onnxruntime-genai's builder, encoders through optimum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos_edge.errors import UserError
from llmos_edge.stages.evaluate import generate
from llmos_edge.stages.export import build_decoder, builder_options, builder_provider
from llmos_edge.stages.model_dir import model_size_bytes
from llmos_edge.toolchains import manager


def _check_model_dir(d: Path, quant: str) -> dict[str, object]:
    for name in (
        "llmos_model.json",
        "model.onnx",
        "genai_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (d / name).is_file(), name
    desc: dict[str, object] = json.loads((d / "llmos_model.json").read_text())
    assert desc["schema_version"] == 1 and desc["format"] == "onnx-genai" and desc["quant"] == quant
    assert desc["eos_token_ids"] == [2] and "<|im_start|>" in str(desc["chat_template"])
    genai = json.loads((d / "genai_config.json").read_text())["model"]
    assert genai["eos_token_id"] == 2 and genai["context_length"] <= 2048
    return desc


def test_fixture_int4_and_fp32(tiny_decoder_dir: Path, tiny_decoder_fp32_dir: Path) -> None:
    _check_model_dir(tiny_decoder_dir, "int4")
    _check_model_dir(tiny_decoder_fp32_dir, "fp32")
    assert model_size_bytes(tiny_decoder_dir) < model_size_bytes(tiny_decoder_fp32_dir)
    graph = (tiny_decoder_dir / "model.onnx").read_bytes()
    assert b"MatMulNBits" in graph and b"GroupQueryAttention" in graph  # fused, block-wise quantized
    assert b"GatherBlockQuantized" in graph  # the tied embedding/lm_head is quantized too
    text, _, n = generate(tiny_decoder_dir, "What is the capital of France?", max_tokens=3)
    assert n == 3 and isinstance(text, str)


def test_int8_export(tmp_path: Path, tiny_llama_hf: Path, tiny_decoder_fp32_dir: Path) -> None:
    out = tmp_path / "int8"
    out.mkdir()
    info = build_decoder(
        manager.ensure("onnx-genai", progress=False),
        tiny_llama_hf,
        out,
        name="t",
        quant="int8",
        context_length=512,
    )
    assert info["builder_options"] == builder_options("int8", 32, 4)
    _check_model_dir(out, "int8")
    assert b"MatMulNBits" in (out / "model.onnx").read_bytes()
    assert json.loads((out / "genai_config.json").read_text())["model"]["context_length"] == 512
    assert model_size_bytes(out) < model_size_bytes(tiny_decoder_fp32_dir)
    assert not (out / ".builder-cache").exists()
    assert generate(out, "Hello", max_tokens=2)[2] == 2


def test_fp16_needs_a_gpu_provider(tmp_path: Path, tiny_llama_hf: Path) -> None:
    with pytest.raises(UserError, match="fp16 decoders are only built for CUDA"):
        builder_provider("fp16", ("CPUExecutionProvider",))
    assert builder_provider("fp16", ("CUDAExecutionProvider", "CPUExecutionProvider")) == "cuda"
    out = tmp_path / "fp16"
    out.mkdir()
    build_decoder(
        manager.ensure("onnx-genai", progress=False),
        tiny_llama_hf,
        out,
        name="t",
        quant="fp16",
        context_length=256,
        execution_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    )
    _check_model_dir(out, "fp16")  # built here; it runs only where CUDA is (jetson target)


def test_encoder_model_dirs(tiny_encoder_dir: Path) -> None:
    import fixtures_models

    int8 = fixtures_models.tiny_encoder_dir("int8")
    for d, quant in ((tiny_encoder_dir, "fp32"), (int8, "int8")):
        desc = json.loads((d / "llmos_model.json").read_text())
        assert desc["format"] == "onnx" and desc["task"] == "feature-extraction" and desc["quant"] == quant
        assert desc["embedding"] == {"pooling": "mean", "normalize": True, "dim": 32, "max_length": 128}
        assert (d / "tokenizer.json").is_file() and not (d / "config.json").exists()
    assert (
        b"MatMulInteger" in (int8 / "model.onnx").read_bytes()
        or b"DynamicQuantize" in (int8 / "model.onnx").read_bytes()
    )
