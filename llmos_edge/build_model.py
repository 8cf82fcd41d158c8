"""The model half of a build: plan -> source -> prepare -> export -> quantize -> evaluate -> model dir.

Every stage is content-addressed in the stage cache (cache.py), so an unchanged rebuild only looks
entries up, and a changed --quant re-runs only quantize and evaluate. The bundle is made by build.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cache
from .errors import UserError
from .stages import evaluate as ev
from .stages import export as ex
from .stages.model_dir import model_size_bytes
from .stages.quantize import quantize_encoder
from .stages.source import ResolvedSource, resolve_source
from .toolchains import manager
from .toolchains.manager import Toolchain

REPAIR_VERSION = 1  # bump when tokenizer_repair changes what it writes


@dataclass(frozen=True)
class ModelBuild:
    model_dir: Path
    reference_dir: Path | None
    report: dict[str, Any]
    source_sha256: str


@dataclass
class _Run:
    """Per-build state: the stage log that becomes report["stages"], and the progress printer."""

    progress: bool
    no_cache: bool
    stages: list[dict[str, Any]] = field(default_factory=list)

    def say(self, stage: str, text: str) -> None:
        if self.progress:
            from rich.console import Console

            Console(stderr=True, highlight=False).print(f"[bold cyan]{stage:>9}[/] {text}")

    def stage(
        self,
        name: str,
        key: str,
        produce: Callable[[Path], Mapping[str, Any] | None],
        describe: Mapping[str, Any],
    ) -> Path:
        t0 = time.monotonic()
        path, hit = cache.run_stage(name, key, produce, no_cache=self.no_cache, describe=describe)
        secs = round(time.monotonic() - t0, 2)
        self.stages.append({"stage": name, "key": key, "cache_hit": hit, "seconds": secs})
        self.say(name, f"{'cached' if hit else 'done'} ({secs:.1f} s) {path}")
        return path

    def log(self, stage: str) -> Callable[[str], None]:
        return lambda text: self.say(stage, text)


def build_model(plan: Any, *, no_cache: bool = False, progress: bool = True) -> ModelBuild:
    """Run the model stages of `plan`; raise CheckFailed when the quality gate says no."""
    run = _Run(progress=progress, no_cache=no_cache)
    t0 = time.monotonic()
    ref_dir: Path | None
    if plan.format == "tflite":
        from .build_model_tflite import export_and_evaluate

        src = _fetch(run, plan)
        model_dir, quality, tc = export_and_evaluate(run, plan, src, _limits(plan))
        ref_dir = None
    else:
        tc = manager.ensure(plan.toolchain, progress=progress)
        src = _fetch(run, plan)
        hf_dir, prep_key = _prepare(run, plan, tc, src)
        ref_dir, ref_key = _export(run, plan, tc, hf_dir, prep_key)
        model_dir, model_key = _quantize(run, plan, tc, hf_dir, prep_key, ref_dir, ref_key)
        quality = _evaluate(run, plan, src, model_dir, model_key, ref_dir, ref_key)
    report = {
        "recipe": plan.recipe.name,
        "target": plan.target.name,
        "task": plan.task,
        "format": plan.format,
        "quant": plan.quant,
        "source": {"kind": src.kind, "sha256": src.sha256, "path": str(src.path)},
        "toolchain_lock": tc.lock_info(),
        "toolchain": tc.lock_info(),  # alias read by build.py's manifest
        "stages": run.stages,
        "quality": quality.to_dict(),
        "sizes": {
            "model_bytes": model_size_bytes(model_dir),
            "reference_bytes": model_size_bytes(ref_dir) if ref_dir else None,
        },
        "seconds": round(time.monotonic() - t0, 2),
    }
    ev.gate(quality)
    return ModelBuild(model_dir=model_dir, reference_dir=ref_dir, report=report, source_sha256=src.sha256)


def _fetch(run: _Run, plan: Any) -> ResolvedSource:
    t0 = time.monotonic()
    base = Path(plan.recipe.source_file).parent if getattr(plan.recipe, "source_file", "") else None
    src = resolve_source(plan.recipe.source, base_dir=base)
    run.stages.append(
        {
            "stage": "fetch",
            "key": src.sha256[:32],
            "cache_hit": None,
            "seconds": round(time.monotonic() - t0, 2),
        }
    )
    run.say("fetch", f"{src.kind} {src.path.name} sha256 {src.sha256[:12]}")
    return src


def _prepare(run: _Run, plan: Any, tc: Toolchain, src: ResolvedSource) -> tuple[Path, str]:
    """GGUF -> fp32 HF folder with the tokenizer repair; other sources are HF folders already."""
    if not src.is_gguf:
        return src.path, src.sha256
    if plan.task != "text-generation":
        raise UserError(
            "a GGUF source can only feed a text-generation recipe",
            hints=["use a Hugging Face folder for feature-extraction models"],
        )
    key = cache.stage_key("prepare", {"source": src.sha256}, {"repair": REPAIR_VERSION}, tc.lock_hash)
    path = run.stage(
        "prepare",
        key,
        lambda out: ex.prepare_from_gguf(tc, src.path, out, on_progress=run.log("prepare")),
        {"source": src.path.name},
    )
    return path, key


def _export(run: _Run, plan: Any, tc: Toolchain, hf_dir: Path, prep_key: str) -> tuple[Path, str]:
    """The fp32 export: shipped when --quant fp32, the quality reference otherwise."""
    opts = {
        "task": plan.task,
        "format": plan.format,
        "context_length": plan.context_length,
        "name": plan.recipe.name,
    }
    key = cache.stage_key("export", {"prepare": prep_key}, opts, tc.lock_hash)

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
    run: _Run, plan: Any, tc: Toolchain, hf_dir: Path, prep_key: str, ref_dir: Path, ref_key: str
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
    }
    if plan.task == "text-generation":  # the builder quantizes while exporting: input is the HF folder
        key = cache.stage_key("quantize", {"prepare": prep_key}, opts, tc.lock_hash)

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
            )
    else:
        key = cache.stage_key("quantize", {"export": ref_key}, opts, tc.lock_hash)

        def produce(out: Path) -> Mapping[str, Any] | None:
            return quantize_encoder(tc, ref_dir, out, quant=plan.quant, on_progress=run.log("quantize"))

    return run.stage("quantize", key, produce, opts), key


def _limits(plan: Any) -> dict[str, Any]:
    q = plan.recipe.quality
    return {
        "max_perplexity_ratio": q.max_perplexity_ratio,
        "max_perplexity": q.max_perplexity,
        "min_cosine": q.min_cosine,
        "require_golden": q.require_golden,
    }


def _evaluate(
    run: _Run, plan: Any, src: ResolvedSource, model_dir: Path, model_key: str, ref_dir: Path, ref_key: str
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
        "limits": _limits(plan),
        "reference": reference,
        "v": 1,
    }
    key = cache.stage_key("evaluate", {"model": model_key, "reference": ref_key}, opts)

    def produce(out: Path) -> None:
        if plan.task == "text-generation":
            rep = ev.evaluate_decoder(
                model_dir,
                ref_dir,
                quant=plan.quant,
                evaluation_text=text,
                golden=plan.recipe.golden,
                limits=_limits(plan),
                reference=reference,
            )
        else:
            rep = ev.evaluate_encoder(
                model_dir,
                ref_dir,
                quant=plan.quant,
                evaluation_text=text,
                limits=_limits(plan),
                reference=reference,
            )
        (out / "quality.json").write_text(json.dumps(rep.to_dict(), indent=2))

    path = run.stage("evaluate", key, produce, {"quant": plan.quant})
    return report_from_dict(json.loads((path / "quality.json").read_text()))


def report_from_dict(d: Mapping[str, Any]) -> ev.QualityReport:
    """Rebuild a QualityReport from its cached to_dict() form."""
    golden = [
        ev.GoldenResult(
            g["prompt"],
            g["expect_contains"],
            g["answer"],
            g["contains_expected"],
            g["stopped_at_end_of_turn"],
            g["tokens"],
            g.get("reference_answer"),
        )
        for g in d.get("golden", [])
    ]
    return ev.QualityReport(
        task=d["task"],
        quant=d["quant"],
        reference=d["reference"],
        limits=d["limits"],
        perplexity=d.get("perplexity"),
        reference_perplexity=d.get("reference_perplexity"),
        eval_tokens=d.get("eval_tokens", 0),
        cosine_min=d.get("cosine_min"),
        cosine_mean=d.get("cosine_mean"),
        golden=golden,
        failures=list(d.get("failures", [])),
    )
