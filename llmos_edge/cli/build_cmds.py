"""`plan`, `build` and `cache`: a few lines each over llmos_edge.pipeline and llmos_edge.cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..formats import FORMATS, QUANTS
from .output import emit_json, json_option, table

if TYPE_CHECKING:
    from ..pipeline import BuildResult

_QUANTS = click.Choice(QUANTS)
_FORMATS = click.Choice(FORMATS)


F = TypeVar("F", bound=Callable[..., None])


def _target_recipe(fn: F) -> F:
    fn = click.option(
        "--recipe",
        "-r",
        default="smollm2-135m-instruct",
        show_default=True,
        help="Recipe name or path to a recipe .toml.",
    )(fn)
    fn = click.option("--target", "-t", default="host", show_default=True, help="Target profile name.")(fn)
    fn = click.option("--quant", type=_QUANTS, help="Override the target's quantization.")(fn)
    return click.option("--format", "fmt", type=_FORMATS, help="Override the model format.")(fn)


@click.command("plan")
@_target_recipe
@json_option
def plan_cmd(target: str, recipe: str, quant: str | None, fmt: str | None, as_json: bool) -> None:
    """Show the resolved build plan without running it."""
    from ..pipeline import plan

    data = plan(target, recipe, quant=quant, format=fmt).to_dict()  # type: ignore[arg-type]
    if as_json:
        emit_json(data)
        return
    rows = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in data.items()]
    table(f"plan: {data['recipe']} for {data['target']}", ["field", "value"], rows)


@click.command("build")
@_target_recipe
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Output folder [build/RECIPE-TARGET].")
@click.option("--no-cache", is_flag=True, help="Re-run every stage.")
@click.option(
    "--key",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Ed25519 signing key (llmos-edge keys generate).",
)
@click.option("--unsigned", is_flag=True, help="Do not sign the bundle (deploy will refuse it).")
@click.option("--no-wheels", is_flag=True, help="Leave the runtime's offline wheels out of the bundle.")
@click.option(
    "--encrypt-for",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Encrypt model weights for this device X25519 public key.",
)
@click.option("--bundle-version", default="0.1.0", show_default=True, help="Bundle version (semver).")
@click.option("--prompt", help="After building, ask the model this and print its answer.")
@click.option(
    "--no-gate",
    is_flag=True,
    help="Do not enforce the quality gate (needed when the recipe has nothing to evaluate); "
    "the report records it.",
)
@json_option
def build_cmd(
    target: str,
    recipe: str,
    quant: str | None,
    fmt: str | None,
    out: Path | None,
    no_cache: bool,
    key: Path | None,
    unsigned: bool,
    no_wheels: bool,
    encrypt_for: Path | None,
    bundle_version: str,
    prompt: str | None,
    no_gate: bool,
    as_json: bool,
) -> None:
    """Build a quality-checked, signed device bundle for TARGET from RECIPE."""
    from ..pipeline import answer, build

    result = build(
        target,
        recipe,
        out=out,
        quant=quant,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        format=fmt,  # type: ignore[arg-type]
        no_cache=no_cache,
        signing_key=key,
        unsigned=unsigned,
        wheels=not no_wheels,
        encrypt_for=encrypt_for,
        version=bundle_version,
        progress=not as_json,
        no_gate=no_gate,
    )
    reply = answer(result, prompt) if prompt else None
    if as_json:
        emit_json({**result.report, "out_dir": str(result.out_dir), "answer": reply})
        return
    _print_summary(result)
    if reply is not None:
        click.echo(f"\n{prompt}\n> {reply}")


def _print_summary(result: BuildResult) -> None:
    """Full paths, never shortened: the user copies them into deploy and verify commands."""
    rep = result.report
    quality = rep.get("model", {}).get("quality", {})
    rows: list[tuple[str, object]] = [
        ("bundle", result.bundle_dir),
        ("image", result.image),
        ("image size", f"{rep['bundle']['image_bytes'] / 1e6:.1f} MB"),
        ("image sha256", rep["bundle"]["image_sha256"]),
    ]
    if result.signing_key is not None:
        rows.append(("signing key", result.signing_key))
        pub = result.signing_key.with_suffix(".pub")
        if pub.is_file():
            rows.append(("public key", pub))
    else:
        rows.append(("signed", "no (--unsigned: deploy will refuse it)"))
    rows += [("quality", _quality_line(quality)), ("seconds", rep["seconds"])]
    table(
        f"built {result.plan.recipe.name} for {result.plan.target.name} "
        f"({result.plan.format}, {result.plan.quant})",
        ["", ""],
        rows,
    )


def _quality_line(q: dict[str, Any]) -> str:
    parts = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in q.items()
        if k in ("perplexity", "reference_perplexity", "perplexity_ratio", "cosine_min", "passed")
        and v is not None
    ]
    if q.get("gate", "on") != "on":  # --no-gate: say so beside the scores, with what it did not stop
        parts.append(f"GATE {q['gate']}: {q.get('verdict', '')}")
    return ", ".join(parts) or "n/a"


@click.group()
def cache() -> None:
    """The content-addressed stage cache."""


@cache.command("ls")
@json_option
def cache_ls(as_json: bool) -> None:
    """List cached stage outputs."""
    from .. import cache as stage_cache

    entries = stage_cache.list_entries()
    if as_json:
        emit_json(
            [
                {
                    "stage": e.stage,
                    "key": e.key,
                    "path": str(e.path),
                    "bytes": e.size_bytes,
                    "last_used": e.last_used,
                }
                for e in entries
            ]
        )
        return
    table(
        "stage cache",
        ["stage", "key", "MB", "last used"],
        [(e.stage, e.key, f"{e.size_bytes / 1e6:.1f}", _ago(e.last_used)) for e in entries],
    )


def _ago(ts: float) -> str:
    import time

    hours = (time.time() - ts) / 3600
    return f"{hours:.1f} h ago" if hours < 48 else f"{hours / 24:.0f} days ago"


@cache.command("prune")
@click.option(
    "--older-than-days",
    type=float,
    default=30,
    show_default=True,
    help="Remove entries unused for this long.",
)
@click.option("--stage", help="Only this stage (fetch, prepare, export, quantize, evaluate).")
@click.option("--all", "prune_all", is_flag=True, help="Remove everything.")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
def cache_prune(older_than_days: float, stage: str | None, prune_all: bool, dry_run: bool) -> None:
    """Remove cached stage outputs."""
    from .. import cache as stage_cache

    removed = stage_cache.prune(
        older_than_days=older_than_days, stage=stage, dry_run=dry_run, everything=prune_all
    )
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {sum(e.size_bytes for e in removed) / 1e6:.1f} MB in {len(removed)} entries")
