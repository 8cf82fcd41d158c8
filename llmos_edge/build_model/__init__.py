"""The model half of a build: plan -> fetch -> the format's stages -> quality gate -> model dir.

One module per format (onnx.py, tflite.py); formats.EXPORTERS names which one builds a plan. The
bundle half is in bundle/, sequenced by pipeline.py.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import cast

from ..errors import UserError
from ..plan import BuildPlan, check_architecture
from ..stages import evaluate as ev
from ..stages.model_dir import model_size_bytes
from ..stages.probe import architecture_of
from ..stages.source import ResolvedSource
from ._run import FormatResult, ModelBuild, StageRunner, fetch, report_from_dict

Builder = Callable[[StageRunner, BuildPlan, ResolvedSource], FormatResult]

__all__ = ["ModelBuild", "build_model", "report_from_dict"]


def _builder(name: str) -> Builder:
    """formats.Exporter.builder -> that module's build(); imported on use (tflite pulls numpy etc.)."""
    module = importlib.import_module(f"{__name__}.{name}")
    return cast(Builder, module.build)


def _with_architecture(plan: BuildPlan, src: ResolvedSource) -> BuildPlan:
    """A source plan could not read (not fetched yet) is checked now, still before any export."""
    if plan.architecture is not None:
        return plan
    arch = architecture_of(src.path)
    check_architecture(plan.exporter, arch.name, plan.recipe.name, arch.config)
    return replace(plan, architecture=arch.name)


def _check_evidence(plan: BuildPlan, no_gate: bool) -> None:
    """A gate with nothing to check would pass anything: such a build needs an explicit --no-gate."""
    if no_gate or not ev.nothing_to_evaluate(plan.recipe.evaluation_text, plan.recipe.golden):
        return
    raise UserError(
        f"recipe {plan.recipe.name!r} has no evaluation text and no golden prompts: the quality gate "
        "would have nothing to check",
        hints=[
            'add evaluation_file = "eval/wiki-mix.txt" (or evaluation_text) and [[golden]] prompts',
            "or build with --no-gate to ship it unchecked (the report records that)",
        ],
    )


def build_model(
    plan: BuildPlan, *, no_cache: bool = False, progress: bool = True, no_gate: bool = False
) -> ModelBuild:
    """Run the model stages of `plan`; raise CheckFailed when the quality gate says no (unless
    `no_gate`: then the scores and failures are only reported, with the gate marked off)."""
    run = StageRunner(plan.exporter, progress=progress, no_cache=no_cache)
    t0 = time.monotonic()
    src = fetch(run, plan)
    plan = _with_architecture(plan, src)
    _check_evidence(plan, no_gate)
    result = _builder(plan.exporter.builder)(run, plan, src)
    if no_gate:
        result.quality.gate = "off (--no-gate)"
        run.say("evaluate", f"quality gate OFF (--no-gate): {result.quality.verdict}")
    report = {
        "recipe": plan.recipe.name,
        "target": plan.target.name,
        "task": plan.task,
        "format": plan.format,
        "quant": plan.quant,
        "architecture": plan.architecture,
        "source": {"kind": src.kind, "sha256": src.sha256, "path": str(src.path)},
        "toolchain_lock": result.toolchain.lock_info(),
        "toolchain": result.toolchain.lock_info(),  # alias read by the bundle manifest
        "stages": run.stages,
        "quality": result.quality.to_dict(),
        "sizes": {
            "model_bytes": model_size_bytes(result.model_dir),
            "reference_bytes": model_size_bytes(result.reference_dir) if result.reference_dir else None,
        },
        "seconds": round(time.monotonic() - t0, 2),
    }
    ev.gate(result.quality)
    return ModelBuild(
        model_dir=result.model_dir,
        reference_dir=result.reference_dir,
        report=report,
        source_sha256=src.sha256,
    )
