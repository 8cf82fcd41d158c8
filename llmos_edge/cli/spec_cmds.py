"""`targets` and `recipes`: look at the data files the build is driven by."""

from __future__ import annotations

import click

from .. import formats, spec
from .output import emit_json, json_option, table


@click.group()
def targets() -> None:
    """Device profiles (targets/*.toml)."""


@targets.command("list")
@json_option
def targets_list(as_json: bool) -> None:
    """List buildable targets."""
    items = spec.list_targets()
    if as_json:
        emit_json(
            [
                {
                    "name": t.name,
                    "aliases": list(t.aliases),
                    "arch": t.platform.arch,
                    "description": t.description,
                }
                for t in items
            ]
        )
        return
    table(
        "targets",
        ["name", "aliases", "arch", "RAM MB", "quant", "transport", "description"],
        [
            (
                t.name,
                ", ".join(t.aliases),
                t.platform.arch,
                t.budgets.ram_mb,
                t.model.default_quant,
                t.transport.kind,
                t.description,
            )
            for t in items
        ],
    )


@targets.command("show")
@click.argument("name")
@json_option
def targets_show(name: str, as_json: bool) -> None:
    """Show one target with `extends` resolved."""
    t = spec.load_target(name)
    data = t.model_dump(mode="json")
    if as_json:
        emit_json(data)
    else:
        _print_tree(data)


@click.group()
def recipes() -> None:
    """Model recipes (recipes/*.toml)."""


@recipes.command("list")
@json_option
def recipes_list(as_json: bool) -> None:
    """List recipes."""
    items = spec.list_recipes()
    if as_json:
        emit_json([{"name": r.name, "task": r.task, "source": r.source.kind} for r in items])
        return
    table(
        "recipes",
        ["name", "task", "source", "description"],
        [(r.name, r.task, r.source.kind, r.description) for r in items],
    )


@recipes.command("show")
@click.argument("name")
@json_option
def recipes_show(name: str, as_json: bool) -> None:
    """Show one recipe."""
    data = spec.load_recipe(name).model_dump(mode="json")
    data["evaluation_text"] = f"<{len(data['evaluation_text'])} characters>"
    if as_json:
        emit_json(data)
    else:
        _print_tree(data)


@recipes.command("check")
@click.argument("recipe")
@click.option("--target", "-t", default="host", show_default=True, help="Target profile to check against.")
@json_option
def recipes_check(recipe: str, target: str, as_json: bool) -> None:
    """Say whether RECIPE (a name or a .toml path) can build, and which exporter will run.

    Checks the source kind and path, reads the architecture (config.json or the GGUF header) and the
    build host, without downloading or exporting anything. Exit 2 with the reason when it cannot build.
    """
    from ..pipeline import plan

    p = plan(target, recipe)
    e, src = p.exporter, p.recipe.source
    others = [
        x.format
        for x in formats.for_task(p.task)
        if x is not e and p.architecture and x.supports(p.architecture)
    ]
    data = {
        "recipe": p.recipe.name,
        "file": p.recipe.source_file,
        "target": p.target.name,
        "source": f"{src.kind} {src.path or src.package or src.id}",
        "architecture": p.architecture or "unknown until fetch (read again before export)",
        "format": p.format,
        "exporter": e.description,
        "toolchain": p.toolchain,
        "runtime": e.runtime,
        "also_buildable_as": others,
        "verdict": "OK",
    }
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


def _print_tree(data: dict[str, object], indent: int = 0) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            click.echo(" " * indent + f"{key}:")
            _print_tree(value, indent + 2)
        else:
            click.echo(" " * indent + f"{key}: {value}")
