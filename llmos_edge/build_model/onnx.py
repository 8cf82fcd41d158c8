"""The model half of a build for the ONNX formats: prepare -> export -> quantize -> evaluate.

Decoders (onnx-genai) go through onnxruntime-genai's builder, encoders (onnx) through optimum. Every
stage is content-addressed in the stage cache (cache.py), so an unchanged rebuild only looks entries
up, and a changed --quant re-runs only quantize and evaluate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..plan import BuildPlan
from ..stages import evaluate as ev
from ..stages import export as ex
from ..stages.quantize import quantize_encoder
from ..stages.source import ResolvedSource
from ..toolchains import manager
from ..toolchains.manager import Toolchain
from ._run import FormatResult, StageRunner, framing, limits, report_from_dict

REPAIR_VERSION = 1  # bump when tokenizer_repair changes what it writes


def build(run: StageRunner, plan: BuildPlan, src: ResolvedSource) -> FormatResult:
    """Run the ONNX stages of `plan` on the fetched source."""
    tc = manager.ensure(plan.toolchain, progress=run.progress)
    hf_dir, prep_key = _prepare(run, plan, tc, src)
    ref_dir, ref_key = _export(run, plan, tc, hf_dir, prep_key)
    model_dir, model_key = _quantize(run, plan, tc, hf_dir, prep_key, ref_dir, ref_key)
    quality = _evaluate(run, plan, src, model_dir, model_key, ref_dir, ref_key)
    return FormatResult(model_dir, ref_dir, quality, tc)


def _prepare(run: StageRunner, plan: BuildPlan, tc: Toolchain, src: ResolvedSource) -> tuple[Path, str]:
    """GGUF -> fp32 HF folder with the tokenizer repair; other sources are HF folders already."""
    if not src.is_gguf:
        return src.path, src.sha256
    if plan.task != "text-generation":
        raise UserError(
            "a GGUF source can only feed a text-generation recipe",
            hints=["use a Hugging Face folder for feature-extraction models"],
        )
    key = run.key("prepare", {"source": src.sha256}, {"repair": REPAIR_VERSION}, tc.lock_hash)
    path = run.stage(
        "prepare",
        key,
        lambda out: ex.prepare_from_gguf(tc, src.path, out, on_progress=run.log("prepare")),
        {"source": src.path.name},
    )
    return path, key


def _export(
    run: StageRunner, plan: BuildPlan, tc: Toolchain, hf_dir: Path, prep_key: str
) -> tuple[Path, str]:
    """The fp32 export: shipped when --quant fp32, the quality reference otherwise."""
    opts = {
        "task": plan.task,
        "format": plan.format,
        "context_length": plan.context_length,
        "name": plan.recipe.name,
        **framing(plan),
    }
    key = run.key("export", {"prepare": prep_key}, opts, tc.lock_hash)

    def produce(out: Path) -> dict[str, Any]:
        if plan.task == "text-generation":
            return ex.build_decoder(
                tc,
                hf_dir,
                out,
                name=plan.recipe.name,
                quant="fp32",
                context_length=plan.context_length,
                on_progress=run.log("export"),
                **framing(plan),
            )
        return ex.export_encoder(
            tc,
            hf_dir,
            out,
            name=plan.recipe.name,
            context_length=plan.context_length,
            on_progress=run.log("export"),
        )

    return run.stage("export", key, produce, opts), key


def _quantize(
    run: StageRunner, plan: BuildPlan, tc: Toolchain, hf_dir: Path, prep_key: str, ref_dir: Path, ref_key: str
) -> tuple[Path, str]:
    if plan.quant == "fp32":
        return ref_dir, ref_key
    opts = {
        "quant": plan.quant,
        "block_size": plan.block_size,
        "accuracy_level": plan.accuracy_level,
        "context_length": plan.context_length,
        "name": plan.recipe.name,
        "execution_providers": list(plan.execution_providers),
        "builder": ex.builder_options(plan.quant, plan.block_size, plan.accuracy_level),
        **framing(plan),
    }
    if plan.task == "text-generation":  # the builder quantizes while exporting: input is the HF folder
        key = run.key("quantize", {"prepare": prep_key}, opts, tc.lock_hash)

        def produce(out: Path) -> Mapping[str, Any] | None:
            return ex.build_decoder(
                tc,
                hf_dir,
                out,
                name=plan.recipe.name,
                quant=plan.quant,
                context_length=plan.context_length,
                block_size=plan.block_size,
                accuracy_level=plan.accuracy_level,
                execution_providers=tuple(plan.execution_providers),
                on_progress=run.log("quantize"),
                **framing(plan),
            )
    else:
        key = run.key("quantize", {"export": ref_key}, opts, tc.lock_hash)

        def produce(out: Path) -> Mapping[str, Any] | None:
            return quantize_encoder(tc, ref_dir, out, quant=plan.quant, on_progress=run.log("quantize"))

    return run.stage("quantize", key, produce, opts), key


def _evaluate(
    run: StageRunner,
    plan: BuildPlan,
    src: ResolvedSource,
    model_dir: Path,
    model_key: str,
    ref_dir: Path,
    ref_key: str,
) -> ev.QualityReport:
    """Scores are cached with their inputs; the gate itself is applied on every build."""
    text = plan.recipe.evaluation_text or ""
    golden = [
        {"prompt": g.prompt, "expect": list(g.expect_contains), "max": g.max_tokens, "system": g.system}
        for g in plan.recipe.golden
    ]
    reference = "fp32 export" + (
        " of the dequantized GGUF (not the original float weights)" if src.is_gguf else ""
    )
    opts = {
        "text": hashlib.sha256(text.encode()).hexdigest(),
        "golden": golden,
        "limits": limits(plan),
        "reference": reference,
        "v": 1,
    }
    key = run.key("evaluate", {"model": model_key, "reference": ref_key}, opts)

    def produce(out: Path) -> None:
        if plan.task == "text-generation":
            rep = ev.evaluate_decoder(
                model_dir,
                ref_dir,
                quant=plan.quant,
                evaluation_text=text,
                golden=plan.recipe.golden,
                limits=limits(plan),
                reference=reference,
            )
        else:
            rep = ev.evaluate_encoder(
                model_dir,
                ref_dir,
                quant=plan.quant,
                evaluation_text=text,
                limits=limits(plan),
                reference=reference,
            )
        (out / "quality.json").write_text(json.dumps(rep.to_dict(), indent=2))

    path = run.stage("evaluate", key, produce, {"quant": plan.quant})
    return report_from_dict(json.loads((path / "quality.json").read_text()))
