"""`llmos-edge toolchain list|install|doctor`: thin commands over llmos_edge.toolchains."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import CheckFailed
from ..toolchains import manager


@click.group("toolchain")
def toolchain() -> None:
    """Isolated converter environments (torch, transformers, exporters) that builds run in."""


@toolchain.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_cmd(as_json: bool) -> None:
    """Show each toolchain, its lock hash, key versions and whether it is installed."""
    rows: list[dict[str, Any]] = [
        {
            "name": tc.name,
            "lock": tc.lock_hash,
            "ready": tc.ready,
            "path": str(tc.env_dir),
            "purpose": manager.TOOLCHAINS[tc.name][0],
            "packages": tc.packages,
        }
        for tc in manager.list_toolchains()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        pk = r["packages"]
        key = ", ".join(
            f"{p}=={pk[p]}" for p in ("torch", "transformers", "onnxruntime-genai", "optimum-onnx") if p in pk
        )
        click.echo(
            f"{r['name']:<14} {r['lock']}  {'ready' if r['ready'] else 'not installed':<13} {r['purpose']}"
        )
        click.echo(f"{'':<14} {key}")


@toolchain.command("install")
@click.argument("name", type=click.Choice(sorted(manager.TOOLCHAINS)))
def install_cmd(name: str) -> None:
    """Create NAME from its lock file (reused when already installed)."""
    tc = manager.ensure(name, progress=True)
    click.echo(f"{tc.name} ready at {tc.env_dir}")


@toolchain.command("doctor")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor_cmd(names: tuple[str, ...], as_json: bool) -> None:
    """Check that each installed toolchain imports its converters; exit 4 when one is broken."""
    results = {n: manager.doctor(n) for n in (names or tuple(manager.TOOLCHAINS))}
    if as_json:
        click.echo(json.dumps({n: {"ok": ok, "detail": d} for n, (ok, d) in results.items()}, indent=2))
    else:
        for n, (ok, detail) in results.items():
            click.echo(f"{n:<14} {'ok  ' if ok else 'FAIL'} {detail}")
    broken = [n for n, (ok, _) in results.items() if not ok]
    if broken:
        raise CheckFailed(
            f"toolchain(s) not usable: {', '.join(broken)}",
            hints=[f"llmos-edge toolchain install {n}" for n in broken],
        )
