"""The model half of a build for format tflite: source -> litert-torch export (quantized) -> gate.

litert-torch quantizes while it converts and takes a GGUF or HF folder directly, so there is no
separate prepare or quantize stage; the reference is the torch fp32 model of the same source. The
context cap (the KV cache fixed at export) comes from the format table and is already in the plan.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..plan import BuildPlan
from ..stages import tflite
from ..stages.source import ResolvedSource
from ._run import FormatResult, StageRunner, framing, limits, report_from_dict


def build(run: StageRunner, plan: BuildPlan, src: ResolvedSource) -> FormatResult:
    """Export and score; the caller applies the gate."""
    tc = tflite.toolchain()
    tflite.check_quant(plan.quant)
    ctx = plan.context_length
    lim = limits(plan)
    opts = {
        "format": "tflite",
        "task": plan.task,
        "quant": plan.quant,
        "context": ctx,
        "name": plan.recipe.name,
        **framing(plan),
    }
    key = run.key("export", {"source": src.sha256}, opts, tc.lock_hash)

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
                **framing(plan),
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
        "limits": lim,
        "golden": [g.model_dump() for g in plan.recipe.golden],
        "v": 1,
    }
    eval_key = run.key("evaluate", {"model": key}, eval_opts)

    def score(out: Path) -> None:
        if plan.task == "text-generation":
            rep = tflite.evaluate_decoder(
                tc,
                model_dir,
                src.path,
                quant=plan.quant,
                evaluation_text=text,
                golden=plan.recipe.golden,
                limits=lim,
            )
        else:
            rep = tflite.evaluate_encoder(
                tc, model_dir, src.path, quant=plan.quant, evaluation_text=text, limits=lim
            )
        (out / "quality.json").write_text(json.dumps(rep.to_dict(), indent=2))

    path = run.stage("evaluate", eval_key, score, {"quant": plan.quant})
    quality = report_from_dict(json.loads((path / "quality.json").read_text()))
    return FormatResult(model_dir, None, quality, tc)
