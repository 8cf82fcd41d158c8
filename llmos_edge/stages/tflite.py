"""TFLite (LiteRT) export stage: litert-torch conversion + ai-edge-quantizer recipes, and its quality gate.

Runs the `tflite` toolchain's worker (workers/tflite_export.py); torch never enters this process. The
gate measures the TFLite model with the on-device engine itself (runtime/engine_tflite.py), so what
is gated is exactly what ships.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fsutil import ensure_free_space
from ..toolchains import manager
from ..toolchains.contract import run_worker
from ..toolchains.manager import Toolchain
from . import model_dir as md
from .evaluate import GoldenResult, QualityReport, _failures, eval_sentences, framed_prompt

Progress = Callable[[str], None] | None
TOOLCHAIN = "tflite"
WORKER = "tflite_export.py"
# quant -> (ai-edge-quantizer recipe, status shown in plans and docs)
QUANTS: dict[str, tuple[str, str]] = {
    "int8": ("dynamic_wi8_afp32", "default: int8 weights, float activations"),
    "int4": ("weight-only int4, block 32", "experimental: right answers but repetitive, slow on CPU"),
    "fp32": ("none", "reference"),
}
# Registers the toolchain with the manager; the lead's manager.TOOLCHAINS entry supersedes this.
manager.TOOLCHAINS.setdefault(
    TOOLCHAIN,
    (
        "TFLite: litert-torch + ai-edge-quantizer (transformers 5)",
        ("torch", "transformers", "litert_torch", "ai_edge_quantizer", "ai_edge_litert.interpreter"),
    ),
)


def toolchain() -> Toolchain:
    """The ready `tflite` toolchain (installed from locks/tflite.txt on first use)."""
    return manager.ensure(TOOLCHAIN)


def check_quant(quant: str) -> None:
    if quant not in QUANTS:
        raise UserError(
            f"quant {quant!r} is not available for format tflite",
            hints=[
                f"use one of: {', '.join(QUANTS)} (int8 is the default)",
                "fp16 is only offered for ONNX on CUDA targets",
            ],
        )


def export_decoder(
    tc: Toolchain,
    source: Path,
    out: Path,
    *,
    name: str,
    quant: str,
    context_length: int,
    prefill_length: int = 32,
    on_progress: Progress = None,
    prompt_format: str = "auto",
    chat_template: str | None = None,
) -> dict[str, Any]:
    """HF folder or .gguf -> model dir with model.tflite (prefill_N/decode, KV cache of context_length)."""
    check_quant(quant)
    ensure_free_space(out, 4 * _size(source), "the TFLite export")
    info = run_worker(
        tc,
        WORKER,
        {
            "op": "export_decoder",
            "source": str(source),
            "out_dir": str(out),
            "quant": quant,
            "cache_length": context_length,
            "prefill_lengths": [min(prefill_length, context_length)],
        },
        on_progress=on_progress,
    )
    if source.is_dir():
        md.copy_tokenizer(source, out)  # a repaired tokenizer from the prepare stage wins
    md.write_descriptor(
        out,
        name=name,
        task="text-generation",
        fmt="tflite",
        quant=quant,
        context_length=context_length,
        prompt_format=prompt_format,
        template=chat_template,
    )
    if not md.eos_ids(out) and info.get("eos_token_ids"):
        _patch_descriptor(out, eos_token_ids=info["eos_token_ids"])
    return {k: info[k] for k in ("num_layers", "cache_length", "prefill_lengths", "tf_schema", "recipe")}


def export_encoder(
    tc: Toolchain,
    hf_dir: Path,
    out: Path,
    *,
    name: str,
    quant: str,
    seq_len: int,
    calibration_texts: Sequence[str] = (),
    on_progress: Progress = None,
) -> dict[str, Any]:
    """Encoder with a FIXED sequence length (dynamic crashes the converter), pooling in the graph.

    With calibration_texts and quant int8, weights AND activations are int8 (static_wi8_ai8); that
    lost 15-37% cosine on transformers here, so only full_integer_encoder (gated) should ask for it.
    """
    check_quant(quant)
    if quant == "int4":
        raise UserError("int4 is not offered for TFLite encoders", hints=["use --quant int8 (the default)"])
    emb = md.embedding_info(hf_dir, seq_len)
    if emb["pooling"] != "mean":
        raise UserError(
            f"{hf_dir}: pooling {emb['pooling']!r} is not supported by the TFLite encoder export",
            hints=["use format onnx for this model"],
        )
    ensure_free_space(out, 3 * _size(hf_dir), "the TFLite encoder export")
    info = run_worker(
        tc,
        WORKER,
        {
            "op": "export_encoder",
            "source": str(hf_dir),
            "out_dir": str(out),
            "quant": "int8-static" if calibration_texts else quant,
            "seq_len": seq_len,
            "normalize": emb["normalize"],
            "calibration_texts": list(calibration_texts),
        },
        on_progress=on_progress,
    )
    md.copy_tokenizer(hf_dir, out)
    emb["dim"] = info["dim"]
    md.write_descriptor(
        out,
        name=name,
        task="feature-extraction",
        fmt="tflite",
        quant=quant,
        context_length=seq_len,
        embedding=emb,
    )
    return {"seq_len": seq_len, "recipe": info["recipe"], "embedding": emb}


def full_integer_encoder(
    tc: Toolchain,
    hf_dir: Path,
    out: Path,
    *,
    name: str,
    seq_len: int,
    evaluation_text: str,
    min_cosine: float,
) -> QualityReport:
    """Full-integer int8 encoder, kept only if its cosine to torch passes the gate (else CheckFailed)."""
    import shutil

    from .evaluate import gate

    texts = eval_sentences(evaluation_text)
    export_encoder(tc, hf_dir, out, name=name, quant="int8", seq_len=seq_len, calibration_texts=texts)
    rep = evaluate_encoder(
        tc,
        out,
        hf_dir,
        quant="int8 full-integer",
        evaluation_text=evaluation_text,
        limits={"min_cosine": min_cosine},
    )
    if rep.failures:
        shutil.rmtree(out, ignore_errors=True)
    gate(rep)
    return rep


def reference_logits(tc: Toolchain, source: Path, ids: Sequence[int]) -> np.ndarray:
    """Torch fp32 logits [len(ids), vocab] of the source model (computed in the toolchain)."""
    with tempfile.TemporaryDirectory(prefix="llmos-tflite-ref-") as tmp:
        npy = Path(tmp) / "logits.npy"
        run_worker(
            tc,
            WORKER,
            {
                "op": "reference",
                "kind": "decoder",
                "source": str(source),
                "token_ids": list(ids),
                "npy_out": str(npy),
            },
        )
        return np.load(npy)


def reference_embeddings(
    tc: Toolchain, source: Path, texts: Sequence[str], normalize: bool = True
) -> np.ndarray:
    """Torch fp32 pooled embeddings [len(texts), dim] of the source encoder."""
    with tempfile.TemporaryDirectory(prefix="llmos-tflite-ref-") as tmp:
        npy = Path(tmp) / "emb.npy"
        run_worker(
            tc,
            WORKER,
            {
                "op": "reference",
                "kind": "encoder",
                "source": str(source),
                "texts": list(texts),
                "normalize": normalize,
                "npy_out": str(npy),
            },
        )
        return np.load(npy)


def perplexity_from_logits(logits: np.ndarray, ids: Sequence[int]) -> float:
    """exp(mean NLL of ids[1:]) given logits[i] predicts ids[i+1]."""
    x = logits[: len(ids) - 1].astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    return float(np.exp(-logp[np.arange(len(ids) - 1), np.asarray(ids[1:])].mean()))


def open_engine(model_dir: Path, threads: int = 0) -> Any:
    """The runtime's TFLite engine for `model_dir` (decoder or encoder, per llmos_model.json)."""
    from ..runtime.descriptor import read_descriptor
    from ..runtime.engine_tflite import TFLiteDecoderEngine, TFLiteEncoderEngine
    from ..runtime.engines.base import EngineOptions

    desc = read_descriptor(model_dir)
    cls = TFLiteDecoderEngine if desc.task == "text-generation" else TFLiteEncoderEngine
    return cls(model_dir, desc, EngineOptions(threads=threads))


def greedy_answer(
    engine: Any, prompt: str, max_tokens: int, system: str | None = None
) -> tuple[str, bool, int]:
    """(answer, stopped at end-of-turn, tokens) for a chat prompt, greedy."""
    from ..runtime.engines.base import GenParams

    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if engine.descriptor.prompt_format == "completion":  # a base model: the raw text, as the runtime does
        ids = engine.encode(framed_prompt({"prompt_format": "completion"}, prompt, system))
    else:
        ids = engine.encode(engine.render_chat(msgs), add_special_tokens=False)
    out: list[int] = []
    for tok in engine.generate(ids, GenParams(max_tokens=max_tokens, temperature=0.0)):
        out.append(tok)
        if tok in engine.eos_ids:
            break
    stopped = bool(out) and out[-1] in engine.eos_ids
    return engine.decode([t for t in out if t not in engine.eos_ids]), stopped, len(out)


def evaluate_decoder(
    tc: Toolchain,
    model_dir: Path,
    source: Path,
    *,
    quant: str,
    evaluation_text: str,
    golden: Sequence[Any],
    limits: dict[str, Any],
) -> QualityReport:
    """Perplexity vs torch fp32 (same tokens, one cache window) and golden answers, via the engine."""
    engine = open_engine(model_dir)
    rep = QualityReport(task="text-generation", quant=quant, reference="torch fp32 (source)", limits=limits)
    if evaluation_text.strip():
        bos, eos = md.special_framing(model_dir)
        text_ids = engine.encode(evaluation_text, add_special_tokens=False)
        ids = ([bos] if bos is not None else []) + text_ids + ([eos] if eos is not None else [])
        ids = ids[: engine.cache_length - 1]
        rep.bos_prepended = bos is not None
        rep.perplexity, rep.eval_tokens = engine.perplexity(ids), len(ids) - 1
        ref_logits = reference_logits(tc, source, ids)
        rep.reference_perplexity = perplexity_from_logits(ref_logits, ids)
        rep.vocab_size = int(ref_logits.shape[-1])  # for the untrained-reference check
    for g in golden:
        answer, stopped, n = greedy_answer(engine, g.prompt, g.max_tokens, g.system)
        hit = all(e.lower() in answer.lower() for e in g.expect_contains)
        chat = engine.descriptor.prompt_format != "completion"
        rep.golden.append(
            GoldenResult(g.prompt, list(g.expect_contains), answer, hit, stopped, n, needs_end_of_turn=chat)
        )
    rep.failures = _failures(rep)
    engine.close()
    return rep


def evaluate_encoder(
    tc: Toolchain, model_dir: Path, source: Path, *, quant: str, evaluation_text: str, limits: dict[str, Any]
) -> QualityReport:
    """Cosine similarity of TFLite embeddings to the torch fp32 encoder."""
    texts = eval_sentences(evaluation_text)
    engine = open_engine(model_dir)
    got = np.asarray(engine.embed(texts), dtype=np.float64)
    engine.close()
    ref = reference_embeddings(tc, source, texts).astype(np.float64)
    cos = cosine_rows(got, ref)
    rep = QualityReport(
        task="feature-extraction",
        quant=quant,
        reference="torch fp32 (source)",
        limits=limits,
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        eval_tokens=len(texts),
    )
    rep.failures = _failures(rep)
    return rep


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((na * nb).sum(axis=1))


def _patch_descriptor(model_dir: Path, **fields: Any) -> None:
    from ..fsutil import atomic_write_text

    path = model_dir / md.DESCRIPTOR
    desc = json.loads(path.read_text())
    desc.update(fields)
    atomic_write_text(path, json.dumps(desc, indent=2) + "\n")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) or 100_000_000
