"""Recipe + target -> a build plan. Pure: no I/O, so `plan` can refuse before any work starts.

What a format can do (toolchain, stages, context cap, architectures) comes from formats.EXPORTERS;
facts about the source and the build host (its architecture, whether LiteRT imports) are read by
pipeline.plan and passed in, so this module stays pure and testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import formats
from .errors import UserError
from .formats import Exporter
from .spec.models import Format, Quant, Recipe, Target

# Bytes per parameter as stored, scales, padding and int8-kept layers included (measured on SmolLM2).
_BYTES_PER_PARAM: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "int8": 1.14, "int4": 0.72}
_RUNTIME_OVERHEAD_MB = 150  # onnxruntime + python + tokenizer, measured on the host
_RAM_FACTOR = 1.5  # weights mapped + KV cache + arena for a 2k context
_NO_ONNXRUNTIME_WHEEL = {"armv7l", "xtensa"}


@dataclass(frozen=True)
class BuildPlan:
    target: Target
    recipe: Recipe
    task: str
    format: Format
    quant: Quant
    block_size: int
    accuracy_level: int
    context_length: int
    toolchain: str
    stages: tuple[str, ...]
    execution_providers: tuple[str, ...]
    estimated_model_mb: float | None
    estimated_ram_mb: float | None
    exporter: Exporter
    architecture: str | None = None  # read from the source at plan time; None: not readable yet
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.name,
            "recipe": self.recipe.name,
            "task": self.task,
            "format": self.format,
            "quant": self.quant,
            "block_size": self.block_size,
            "accuracy_level": self.accuracy_level,
            "context_length": self.context_length,
            "toolchain": self.toolchain,
            "exporter": self.exporter.description,
            "runtime": self.exporter.runtime,
            "architecture": self.architecture or "unknown until fetch",
            "stages": list(self.stages),
            "execution_providers": list(self.execution_providers),
            "estimated_model_mb": self.estimated_model_mb,
            "estimated_ram_mb": self.estimated_ram_mb,
            "budgets": {
                "storage_mb": self.target.budgets.storage_mb,
                "model_ram_mb": self.target.budgets.model_ram_mb,
            },
            "notes": list(self.notes),
        }


def make_plan(
    target: Target,
    recipe: Recipe,
    *,
    quant: Quant | None = None,
    format: Format | None = None,
    architecture: str | None = None,
    config: Mapping[str, object] | None = None,
) -> BuildPlan:
    """Resolve every choice and refuse what cannot fit or run on the target.

    `architecture` is the source's model family (HF class, model_type or GGUF general.architecture);
    when given, a family no exporter of the chosen format takes is refused here, not after export,
    and so is a `config` (config.json) layout the exporter is known to misread.
    """
    _check_platform(target)
    override = recipe.targets.get(target.name)
    exporter = _choose_exporter(target, recipe, format or (override.format if override else None))
    q = quant or (override.quant if override else None) or recipe.quant or target.model.default_quant
    _check_quant(target, recipe, exporter, q)
    if recipe.task == "feature-extraction" and is_gguf_source(recipe):
        raise UserError(
            f"{recipe.name}: a GGUF source can only feed a text-generation recipe",
            hints=['use a Hugging Face folder (kind = "local") for feature-extraction models'],
        )
    if architecture is not None:
        check_architecture(exporter, architecture, recipe.name, config or {})
    model_mb, ram_mb = _estimate(recipe, q)
    _check_budgets(target, recipe, q, model_mb, ram_mb)
    requested_ctx = override.context_length if override and override.context_length else recipe.context_length
    context = exporter.context(requested_ctx)
    return BuildPlan(
        target=target,
        recipe=recipe,
        task=recipe.task,
        format=exporter.format,
        quant=q,
        block_size=(override.block_size if override and override.block_size else recipe.block_size),
        accuracy_level=recipe.accuracy_level,
        context_length=context,
        toolchain=exporter.toolchain,
        stages=exporter.stages(quant=q, gguf_source=is_gguf_source(recipe)),
        execution_providers=target.execution_providers,
        estimated_model_mb=model_mb,
        estimated_ram_mb=ram_mb,
        exporter=exporter,
        architecture=architecture,
        notes=_notes(target, recipe, q, exporter, requested_ctx),
    )


def is_gguf_source(recipe: Recipe) -> bool:
    src = recipe.source
    return src.kind == "gguf" or (src.kind == "pypi" and (src.member or "").endswith(".gguf"))


def check_architecture(
    exporter: Exporter, architecture: str, recipe: str, config: Mapping[str, object]
) -> None:
    """Refuse a model family the format's exporter cannot convert, listing the ones it can."""
    if exporter.supports(architecture) is not None:
        bad = exporter.misread(architecture, config)
        if bad is not None:
            raise UserError(f"{recipe}: {architecture} config: {bad.what}", hints=[bad.fix])
        return
    others = [
        e.format for e in formats.for_task(exporter.task) if e is not exporter and e.supports(architecture)
    ]
    hints = [
        f"supported for {exporter.format} {exporter.task}: "
        f"{', '.join(a.hf_class for a in exporter.architectures)}"
    ]
    if others:
        hints.append(f"format {', '.join(others)} takes {architecture}: --format {others[0]}")
    hints.append("or choose a model of a supported architecture (docs/spec.md lists them)")
    raise UserError(
        f"{recipe}: architecture {architecture!r} has no {exporter.format} exporter for {exporter.task}",
        hints=hints,
    )


def _check_platform(target: Target) -> None:
    if target.platform.arch in _NO_ONNXRUNTIME_WHEEL:
        raise UserError(
            f"target {target.name!r} is {target.platform.arch}: onnxruntime publishes no wheel for it, "
            "so the runtime cannot run there",
            hints=[
                "install a 64-bit OS image (Raspberry Pi OS 64-bit) and use an aarch64 target "
                "such as rpi4 or rpi5",
                "for microcontrollers use a host-offload target (esp32s3-host-offload)",
            ],
        )


def _choose_exporter(target: Target, recipe: Recipe, requested: Format | None) -> Exporter:
    fmt: Format = requested or target.model.default_format
    if recipe.task == "feature-extraction" and fmt == "onnx-genai":
        fmt = "onnx"  # genai format is for decoders only; encoders are plain ONNX graphs
    allowed = target.model.formats
    if fmt not in allowed and not (fmt == "onnx" and "onnx-genai" in allowed):
        raise UserError(
            f"format {fmt!r} is not supported on target {target.name!r}",
            hints=[f"supported formats: {', '.join(allowed)}"],
        )
    exporter = formats.find(fmt, recipe.task)
    if exporter is None:
        offered = [
            e.format for e in formats.for_task(recipe.task) if e.format in allowed or e.format == "onnx"
        ]
        raise UserError(
            f"format {fmt!r} has no exporter for {recipe.task} models ({recipe.name})",
            hints=[f"use --format {f}" for f in offered] or ["see docs/spec.md: formats and exporters"],
        )
    return exporter


def _check_quant(target: Target, recipe: Recipe, exporter: Exporter, quant: str) -> None:
    if quant not in target.model.quants:
        raise UserError(
            f"quantization {quant!r} is not supported on target {target.name!r}",
            hints=[f"choose one of: {', '.join(target.model.quants)} (--quant)"],
        )
    if recipe.task == "feature-extraction" and quant == "int4":
        raise UserError(
            f"int4 is not offered for feature-extraction models ({recipe.name})",
            hints=["use --quant int8 (cosine >= 0.99 measured on MiniLM)"],
        )
    if quant not in exporter.quants:
        raise UserError(
            f"quant {quant!r} is not available for format {exporter.format} ({exporter.task})",
            hints=[
                f"use one of: {', '.join(q for q in exporter.quants if q in target.model.quants)} (--quant)"
            ],
        )


def _estimate(recipe: Recipe, quant: str) -> tuple[float | None, float | None]:
    if recipe.params_m is None:
        return None, None
    model_mb = round(recipe.params_m * _BYTES_PER_PARAM[quant], 1)
    return model_mb, round(model_mb * _RAM_FACTOR + _RUNTIME_OVERHEAD_MB, 1)


def _check_budgets(
    target: Target, recipe: Recipe, quant: str, model_mb: float | None, ram_mb: float | None
) -> None:
    if model_mb is None or ram_mb is None:
        return
    if ram_mb > target.budgets.model_ram_mb:
        raise UserError(
            f"{recipe.name} at {quant} needs about {ram_mb:.0f} MB of RAM; target {target.name!r} "
            f"allows {target.budgets.model_ram_mb} MB for models",
            hints=[
                "choose a smaller quantization (--quant int4)",
                "or a smaller model",
                "or a target with more memory",
            ],
        )
    if model_mb > target.budgets.storage_mb:
        raise UserError(
            f"{recipe.name} at {quant} is about {model_mb:.0f} MB; target {target.name!r} has "
            f"{target.budgets.storage_mb} MB of storage for bundles",
            hints=["choose a smaller quantization (--quant int4)"],
        )


def _notes(
    target: Target, recipe: Recipe, quant: str, exporter: Exporter, requested_ctx: int
) -> tuple[str, ...]:
    notes: list[str] = []
    if exporter.context_cap is not None and requested_ctx > exporter.context_cap:
        notes.append(
            f"context capped at {exporter.context_cap} (asked {requested_ctx}): {exporter.format} "
            "fixes the KV cache / sequence length at export"
        )
    if recipe.source.kind in ("pypi", "gguf") and (recipe.source.member or recipe.source.path or "").endswith(
        ".gguf"
    ):
        notes.append("the fp32 reference is the dequantized GGUF, not the original float weights")
    if quant == "int4" and exporter.format == "onnx-genai":
        notes.append(f"int4 block-wise (block {recipe.block_size}, accuracy_level {recipe.accuracy_level})")
    if target.bundle_kind == "esp32s3-host-offload" and target.esp32 is not None:
        notes.append(f"the model runs on the host ({target.esp32.host_target}); the chip gets firmware")
    return tuple(notes)
