"""The model half of a build for format tflite: source -> litert-torch export (quantized) -> gate.

litert-torch quantizes while it converts and takes a GGUF or HF folder directly, so there is no
separate prepare or quantize stage; the reference is the torch fp32 model of the same source.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from . import cache
from .stages import tflite

# The KV cache is fixed at export and copied on every decode step; 2k would move ~94 MB a token.
MAX_TFLITE_CONTEXT = 512
_ENCODER_MAX_SEQ = 256


def tflite_context(plan: Any) -> int:
    return int(
        min(plan.context_length, MAX_TFLITE_CONTEXT if plan.task == "text-generation" else _ENCODER_MAX_SEQ)
    )


def export_and_evaluate(run: Any, plan: Any, src: Any, limits: dict[str, Any]) -> tuple[Path, Any, Any]:
    """Returns (model dir, quality report, toolchain); the caller applies the gate."""
    from .build_model import report_from_dict

    tc = tflite.toolchain()
    tflite.check_quant(plan.quant)
    ctx = tflite_context(plan)
    opts = {
        "format": "tflite",
        "task": plan.task,
        "quant": plan.quant,
        "context": ctx,
        "name": plan.recipe.name,
    }
    key = cache.stage_key("export", {"source": src.sha256}, opts, tc.lock_hash)

    def produce(out: Path) -> dict[str, Any]:
        if plan.task == "text-generation":
            return tflite.export_decoder(
                tc,
                src.path,
                out,
                name=plan.recipe.name,
                quant=plan.quant,
                context_length=ctx,
                on_progress=run.log("export"),
            )
        return tflite.export_encoder(
            tc,
            src.path,
            out,
            name=plan.recipe.name,
            quant=plan.quant,
            seq_len=ctx,
            on_progress=run.log("export"),
        )

    model_dir = run.stage("export", key, produce, opts)
    text = plan.recipe.evaluation_text or ""
    eval_opts = {
        "text": hashlib.sha256(text.encode()).hexdigest(),
        "limits": limits,
        "golden": [g.model_dump() for g in plan.recipe.golden],
        "v": 1,
    }
    eval_key = cache.stage_key("evaluate", {"model": key}, eval_opts)

    def score(out: Path) -> None:
        if plan.task == "text-generation":
            rep = tflite.evaluate_decoder(
                tc,
                model_dir,
                src.path,
                quant=plan.quant,
                evaluation_text=text,
                golden=plan.recipe.golden,
                limits=limits,
            )
        else:
            rep = tflite.evaluate_encoder(
                tc, model_dir, src.path, quant=plan.quant, evaluation_text=text, limits=limits
            )
        (out / "quality.json").write_text(json.dumps(rep.to_dict(), indent=2))

    path = run.stage("evaluate", eval_key, score, {"quant": plan.quant})
    return model_dir, report_from_dict(json.loads((path / "quality.json").read_text())), tc
