"""Export stages: GGUF -> HF folder (prepare), decoders via the genai builder, encoders via optimum.

Measured: onnxruntime-genai's builder quantizes while it exports (MatMulNBits weights and the shared
GatherBlockQuantized embedding/lm_head are written during graph construction; its fp32 graph cannot be
re-quantized into the same shape). So for decoders "export" makes the fp32 reference and "quantize"
re-runs the builder at the target precision from the cached prepared HF folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import ensure_free_space
from ..toolchains.contract import run_worker
from ..toolchains.manager import Toolchain
from . import model_dir as md
from .model_dir import embedding_info
from .tokenizer_repair import repair_tokenizer

Progress = Callable[[str], None] | None
# Measured on SmolLM2 (bench/bench_build.py): plain RTN int4 (the builder's default, 86 MB, ppl 21.5)
# rambles past end-of-turn; keeping the llama.cpp "mixed" sensitive layers at int8 gives 96.6 MB,
# ppl 22.0, and "The capital of France is Paris, France." ending at <|im_end|>. rtn_last (lm_head
# int8) went over 100 MB; k_quant was 88.7 MB but ppl 23.7; asymmetric int4 made an invalid graph.
INT4_MIXED = {"algo_config": "rtn", "matmul_mixed_precision": "mixed_layers:int8"}
# int8 = the builder's 8-bit MatMulNBits (accuracy_level 4) + the tied embedding read from the int8
# lm_head through GatherBlockQuantized (the builder alone keeps a 113 MB fp32 table: 267 MB in all).
# Measured on SmolLM2 (bench/bench_int8.py): block 128 -> 153.5 MB, ppl 17.15 (fp32 17.16), "The
# capital of France is Paris." + <|im_end|>; blocks 32 and 64 (153.8 / 145.3 MB, ppl 17.5) answer
# "L'Étoile, ..." without stopping: the answer's first token is a near tie on the dequantized Q4_1
# (fp32 logits "The" 25.33 vs "L" 25.24; block 128 keeps "The" by 0.05, blocks 32/64 flip it).
INT8_BLOCK_SIZE = 128
# keys starting with "llmos_" are done by llmos after the builder (they are part of the cache key)
INT8_TIED = {"llmos_tie_int8_embedding": "gather_block_quantized_v1"}


def prepare_from_gguf(
    tc: Toolchain, gguf: Path, out: Path, *, on_progress: Progress = None
) -> dict[str, Any]:
    """Dequantized fp32 HF folder + repaired tokenizer (the fp32 reference comes from this)."""
    ensure_free_space(out, gguf.stat().st_size * 8, "the dequantized GGUF")
    info = run_worker(
        tc,
        "genai_worker.py",
        {"op": "gguf_to_hf", "gguf_path": str(gguf), "out_dir": str(out)},
        on_progress=on_progress,
    )
    conventions = _gguf_special_tokens(gguf, out)
    repairs = repair_tokenizer(out)  # after: its end-of-turn fix (add_bos_token false) wins
    _inline_chat_template(out)
    return {"architecture": info["architecture"], "tokenizer_repairs": repairs, "gguf_tokenizer": conventions}


def _gguf_special_tokens(gguf: Path, hf_dir: Path) -> dict[str, bool]:
    """The GGUF's tokenizer.ggml.add_bos_token / add_eos_token into tokenizer_config.json, where the
    quality gate and the runtime read the BOS convention (Gemma 3: perplexity 14.8 with BOS, 58.9 without)."""
    from .probe import gguf_flag

    found = {
        field: flag
        for field, key in (
            ("add_bos_token", "tokenizer.ggml.add_bos_token"),
            ("add_eos_token", "tokenizer.ggml.add_eos_token"),
        )
        if (flag := gguf_flag(gguf, key)) is not None
    }
    cfg_path = hf_dir / "tokenizer_config.json"
    if found and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        cfg.update(found)
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return found


def _inline_chat_template(hf_dir: Path) -> None:
    """Put chat_template.jinja into tokenizer_config.json too: the runtime and og read it there."""
    jinja, cfg_path = hf_dir / "chat_template.jinja", hf_dir / "tokenizer_config.json"
    if jinja.is_file() and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        if not cfg.get("chat_template"):
            cfg["chat_template"] = jinja.read_text()
            cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def builder_provider(quant: str, execution_providers: tuple[str, ...]) -> str:
    """The builder's -e: fp16 graphs only exist for GPU providers."""
    if quant != "fp16":
        return "cpu"
    if "CUDAExecutionProvider" in execution_providers or "TensorrtExecutionProvider" in execution_providers:
        return "cuda"
    raise UserError(
        "fp16 decoders are only built for CUDA targets (onnxruntime-genai has no fp16 CPU graph)",
        hints=["use --quant int4 or int8 on CPU targets"],
    )


def builder_options(quant: str, block_size: int, accuracy_level: int) -> dict[str, Any]:
    """The builder's --extra_options for a precision (part of the quantize stage's cache key)."""
    extra: dict[str, Any] = {}
    if quant in ("int4", "int8"):
        extra = {"block_size": block_size, "accuracy_level": accuracy_level}
    if quant == "int4":
        extra.update(INT4_MIXED)
    if quant == "int8":
        extra.update(block_size=INT8_BLOCK_SIZE, **INT8_TIED)
    return extra


def build_decoder(
    tc: Toolchain,
    hf_dir: Path,
    out: Path,
    *,
    name: str,
    quant: str,
    context_length: int,
    block_size: int = 32,
    accuracy_level: int = 4,
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",),
    on_progress: Progress = None,
    prompt_format: str = "auto",
    chat_template: str | None = None,
) -> dict[str, Any]:
    """onnxruntime-genai builder -> model dir (fused GQA, MatMulNBits, genai_config, llmos_model.json)."""
    _check_hf_dir(hf_dir)
    weights = sum(p.stat().st_size for p in hf_dir.glob("*.safetensors")) or 100_000_000
    ensure_free_space(out, int(weights * 1.5), f"the {quant} export")
    extra = builder_options(quant, block_size, accuracy_level)
    req = {
        "op": "export_decoder",
        "hf_dir": str(hf_dir),
        "out_dir": str(out),
        "precision": quant,
        "execution_provider": builder_provider(quant, execution_providers),
        "cache_dir": str(out / ".builder-cache"),
        "extra_options": {k: v for k, v in extra.items() if not k.startswith("llmos_")},
        "tie_int8_embedding": "llmos_tie_int8_embedding" in extra,
    }
    info = run_worker(tc, "genai_worker.py", req, on_progress=on_progress)
    md.copy_tokenizer(hf_dir, out)
    eos = md.eos_ids(out)
    md.patch_genai_config(out, eos=eos, context_length=context_length)
    md.write_descriptor(
        out,
        name=name,
        task="text-generation",
        fmt="onnx-genai",
        quant=quant,
        context_length=context_length,
        prompt_format=prompt_format,
        template=chat_template,
    )
    return {
        "architecture": info["architecture"],
        "builder_options": extra,
        "tied_int8_embedding": info.get("tied_int8_embedding"),
    }


def _check_hf_dir(hf_dir: Path) -> None:
    if not (hf_dir / "config.json").is_file():
        raise UserError(
            f"{hf_dir} is not a Hugging Face model folder (no config.json)",
            hints=["point the recipe's source at a folder with config.json and weights"],
        )


def export_encoder(
    tc: Toolchain, hf_dir: Path, out: Path, *, name: str, context_length: int, on_progress: Progress = None
) -> dict[str, Any]:
    """optimum feature-extraction export (fp32) -> model dir with embedding info."""
    _check_hf_dir(hf_dir)
    ensure_free_space(
        out, 3 * sum(p.stat().st_size for p in hf_dir.rglob("*") if p.is_file()), "encoder export"
    )
    info = run_worker(
        tc,
        "optimum_worker.py",
        {"op": "export_encoder", "model_dir": str(hf_dir), "out_dir": str(out)},
        on_progress=on_progress,
    )
    for extra in out.iterdir():  # keep the design's layout: model.onnx + tokenizer files
        if extra.name not in ("model.onnx", "model.onnx.data", *md.TOKENIZER_FILES):
            if extra.is_dir():
                shutil.rmtree(extra)
            else:
                extra.unlink()
    md.copy_tokenizer(hf_dir, out)
    emb = embedding_info(hf_dir, context_length)
    md.write_descriptor(
        out,
        name=name,
        task="feature-extraction",
        fmt="onnx",
        quant="fp32",
        context_length=context_length,
        embedding=emb,
    )
    return {"architecture": info["architecture"], "embedding": emb}
