"""What every format's model build shares: the stage runner (cache + stage log + progress), the
fetch stage, the quality limits, and the cached quality report's round trip."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import cache
from ..formats import Exporter
from ..plan import BuildPlan
from ..stages import evaluate as ev
from ..stages.source import ResolvedSource, resolve_source
from ..toolchains.manager import Toolchain


@dataclass(frozen=True)
class ModelBuild:
    model_dir: Path
    reference_dir: Path | None
    report: dict[str, Any]
    source_sha256: str


@dataclass(frozen=True)
class FormatResult:
    """What a format's builder hands back; build_model turns it into the report and applies the gate."""

    model_dir: Path
    reference_dir: Path | None
    quality: ev.QualityReport
    toolchain: Toolchain


@dataclass
class StageRunner:
    """Per-build state: the stage log that becomes report["stages"], and the progress printer."""

    exporter: Exporter
    progress: bool
    no_cache: bool
    stages: list[dict[str, Any]] = field(default_factory=list)

    def say(self, stage: str, text: str) -> None:
        if self.progress:
            from rich.console import Console

            Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold cyan]{stage:>9}[/] {text}")

    def key(
        self, stage: str, inputs: Mapping[str, str], options: Mapping[str, Any], lock: str | None = None
    ) -> str:
        """The stage key over this exporter's code for `stage` (formats.Exporter.stage_code)."""
        return cache.stage_key(stage, inputs, options, lock, code=cache.code_files(self.exporter, stage))

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


def fetch(run: StageRunner, plan: BuildPlan) -> ResolvedSource:
    t0 = time.monotonic()
    base = Path(plan.recipe.source_file).parent if plan.recipe.source_file else None
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


def limits(plan: BuildPlan) -> dict[str, Any]:
    q = plan.recipe.quality
    return {
        "max_perplexity_ratio": q.max_perplexity_ratio,
        "max_perplexity": q.max_perplexity,
        "min_cosine": q.min_cosine,
        "require_golden": q.require_golden,
    }


def framing(plan: BuildPlan) -> dict[str, Any]:
    """The recipe's prompt framing: the descriptor records it, so it is part of the exporting stages' keys."""
    if plan.task != "text-generation":
        return {}
    return {"prompt_format": plan.recipe.prompt_format, "chat_template": plan.recipe.chat_template}


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
            bool(g.get("needs_end_of_turn", True)),
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
        vocab_size=d.get("vocab_size"),
        bos_prepended=bool(d.get("bos_prepended", False)),
    )
