"""`llmos_edge.build()`: recipe + target -> quality-checked model -> signed device bundle.

The model half (toolchains, export, quantization, quality gate, stage cache) lives in the
build_model package; the bundle half in bundle/. This module only sequences them and writes the
build report, so CI scripts and the CLI share one code path.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import spec
from .errors import UserError
from .fsutil import atomic_dir, atomic_write_text, ensure_free_space
from .plan import BuildPlan, make_plan
from .spec.models import Format, Quant, Recipe, Target
from .stages import probe

if TYPE_CHECKING:
    from .build_model import ModelBuild
    from .bundle.spec import BundleResult

DEFAULT_TARGET = "host"
DEFAULT_RECIPE = "smollm2-135m-instruct"
_SPACE_MARGIN_MB = 300


@dataclass(frozen=True)
class BuildResult:
    plan: BuildPlan
    out_dir: Path
    model_dir: Path  # the plaintext model in the stage cache (bundle copies may be encrypted)
    bundle_dir: Path
    image: Path
    report: dict[str, Any]
    signing_key: Path | None = None  # the private key that signed the image (None: --unsigned)


def plan(
    target: str = DEFAULT_TARGET,
    recipe: str = DEFAULT_RECIPE,
    *,
    quant: Quant | None = None,
    format: Format | None = None,
) -> BuildPlan:
    """Resolve a build without running it; raises UserError for builds that cannot fit or run.

    Reads what plan-time refusals need and nothing more: the source's kind and architecture
    (config.json or the GGUF header) and whether this host can run the format's quality gate.
    """
    the_target, the_recipe = spec.load_target(target), spec.load_recipe(recipe)
    base = recipe_dir(the_recipe)
    probe.check_source_kind(the_recipe.source, base)
    arch = probe.read_architecture(the_recipe.source, base)
    the_plan = make_plan(
        the_target,
        the_recipe,
        quant=quant,
        format=format,
        architecture=arch.name if arch else None,
        config=arch.config if arch else None,
    )
    probe.check_host(the_plan.exporter)
    return the_plan


def recipe_dir(recipe: Recipe) -> Path | None:
    """Relative source paths resolve against the recipe file's folder."""
    return Path(recipe.source_file).parent if recipe.source_file else None


def default_signing_key() -> Path:
    """Bundles are signed by default; the first build makes a key in the config folder and says where."""
    from .bundle.keyplace import default_signing_key as _default

    return _default()


def build(
    target: str = DEFAULT_TARGET,
    recipe: str = DEFAULT_RECIPE,
    *,
    out: Path | None = None,
    quant: Quant | None = None,
    format: Format | None = None,
    no_cache: bool = False,
    signing_key: Path | None = None,
    unsigned: bool = False,
    wheels: bool = True,
    encrypt_for: Path | None = None,
    version: str = "0.1.0",
    progress: bool = True,
    no_gate: bool = False,
) -> BuildResult:
    """Run every stage; the output folder appears only when the whole build succeeded."""
    from .build_model import build_model

    started = time.monotonic()
    the_plan = plan(target, recipe, quant=quant, format=format)
    out = out or Path("build") / f"{the_plan.recipe.name}-{the_plan.target.name}"
    ensure_free_space(out.parent.resolve(), _needed_bytes(the_plan), "the build output")
    model = build_model(the_plan, no_cache=no_cache, progress=progress, no_gate=no_gate)
    key = None if unsigned else (signing_key or default_signing_key())
    with atomic_dir(out.resolve()) as tmp:
        bundle = _make_bundle(
            the_plan,
            model,
            tmp,
            key=key,
            wheels=wheels,
            encrypt_for=encrypt_for,
            version=version,
            use_cache=not no_cache,
        )
        firmware = _maybe_firmware(the_plan, tmp, version)
        report = _report(the_plan, model.report, bundle, firmware, key, time.monotonic() - started)
        atomic_write_text(tmp / "build-report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    final = out.resolve()
    bundle_dir = final / bundle.folder.name
    return BuildResult(
        plan=the_plan,
        out_dir=final,
        model_dir=model.model_dir,
        bundle_dir=bundle_dir,
        image=final / bundle.image.name,
        report=report,
        signing_key=key.resolve() if key else None,
    )


def _needed_bytes(the_plan: BuildPlan) -> int:
    model_mb = the_plan.estimated_model_mb or 500
    # the bundle folder + its image + wheels
    return int((model_mb * 2.2 + _SPACE_MARGIN_MB) * 1e6)


def _make_bundle(
    the_plan: BuildPlan,
    model: ModelBuild,
    out: Path,
    *,
    key: Path | None,
    wheels: bool,
    encrypt_for: Path | None,
    version: str,
    use_cache: bool = True,
) -> BundleResult:
    from .bundle import BundleSpec, make_bundle

    spec_ = BundleSpec(
        target=_runtime_target(the_plan),
        recipe=the_plan.recipe.name,
        version=version,
        models={the_plan.recipe.name: model.model_dir},
        golden=the_plan.recipe.golden,
        quality_report=model.report.get("quality", {}),
        toolchain_lock=model.report.get("toolchain_lock", {}),
        source_model_sha256=model.source_sha256,
        signing_key=key,
        wheels=wheels,
        encrypt_for=encrypt_for,
        extra_templates=the_plan.recipe.templates,
    )
    return make_bundle(spec_, out, use_cache=use_cache)


def _runtime_target(the_plan: BuildPlan) -> Target:
    """For host-offload targets the bundle runs on the host the chip is attached to (+ the bridge)."""
    if the_plan.target.bundle_kind == "esp32s3-host-offload" and the_plan.target.esp32 is not None:
        from .esp32.hostpkg import host_bundle_target

        host: Target = host_bundle_target(the_plan.target)
        return host
    return the_plan.target


def _maybe_firmware(the_plan: BuildPlan, out: Path, version: str) -> dict[str, Any] | None:
    if the_plan.target.bundle_kind != "esp32s3-host-offload":
        return None
    from .esp32.firmware import render_firmware_project

    result = render_firmware_project(the_plan.target, out / "firmware", version=version)
    return {
        "project_dir": "firmware",
        "built": result.built,
        "missing": list(result.missing),
        "images": [p.name for p in result.images],
    }


def _report(
    the_plan: BuildPlan,
    model_report: dict[str, Any],
    bundle: BundleResult,
    firmware: dict[str, Any] | None,
    key: Path | None,
    seconds: float,
) -> dict[str, Any]:
    from .fsutil import sha256_file

    return {
        "schema_version": 1,
        "plan": the_plan.to_dict(),
        "model": model_report,
        "bundle": {
            "folder": bundle.folder.name,
            "image": bundle.image.name,
            "image_sha256": sha256_file(bundle.image),
            "image_bytes": bundle.image.stat().st_size,
            "version": bundle.manifest.get("bundle_version"),
            "signed": key is not None,
        },
        "firmware": firmware,
        "seconds": round(seconds, 2),
    }


def answer(result: BuildResult, prompt: str, *, max_tokens: int = 64) -> str:
    """Ask the freshly built model one question, greedily, through the same runtime devices use."""
    from dataclasses import replace

    from .runtime.config import config_for_model_dirs
    from .runtime.runner import generate_to

    if result.plan.task != "text-generation":
        raise UserError(
            f"{result.plan.recipe.name} is a {result.plan.task} model; it answers no prompts",
            hints=["serve it and call /v1/embeddings instead"],
        )
    from .runtime.descriptor import read_descriptor

    config = replace(config_for_model_dirs([result.model_dir]), audit_log=None)
    body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0}
    if read_descriptor(result.model_dir).prompt_format == "completion":  # a base model: raw text
        body["prompt"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    return generate_to(config, None, body, lambda _piece: None).text.strip()
