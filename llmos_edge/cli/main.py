"""Entry point: a click group whose commands are imported only when used."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from typing import Any

import click

from ..errors import LlmosError, UserError
from ..fsutil import is_disk_full

# command name -> "module:attribute"; modules are imported lazily so `--help` stays fast and
# a deploy-only install never imports model tooling.
COMMANDS: dict[str, str] = {
    "targets": "llmos_edge.cli.spec_cmds:targets",
    "recipes": "llmos_edge.cli.spec_cmds:recipes",
    "plan": "llmos_edge.cli.build_cmds:plan_cmd",
    "build": "llmos_edge.cli.build_cmds:build_cmd",
    "cache": "llmos_edge.cli.build_cmds:cache",
    "toolchain": "llmos_edge.cli.toolchain_cmds:toolchain",
    "keys": "llmos_edge.cli.bundle_cmds:keys",
    "verify": "llmos_edge.cli.bundle_cmds:verify_cmd",
    "inspect": "llmos_edge.cli.bundle_cmds:inspect_cmd",
    "run": "llmos_edge.cli.runtime_cmds:run_cmd",
    "serve": "llmos_edge.cli.runtime_cmds:serve_cmd",
    "smoke": "llmos_edge.cli.runtime_cmds:smoke_cmd",
    "deploy": "llmos_edge.cli.deploy_cmds:deploy_cmd",
    "status": "llmos_edge.cli.deploy_cmds:status_cmd",
    "rollback": "llmos_edge.cli.deploy_cmds:rollback_cmd",
    "logs": "llmos_edge.cli.deploy_cmds:logs_cmd",
    "releases": "llmos_edge.cli.deploy_cmds:releases_cmd",
    "flash": "llmos_edge.cli.esp32_cmds:flash_cmd",
    "ports": "llmos_edge.cli.esp32_cmds:ports_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if self._available(n))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)  # added in code (plugins, tests)
        module_name, attr = COMMANDS[cmd_name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("llmos_edge"):
                return None  # command not part of this build
            raise
        cmd: click.Command = getattr(module, attr)
        return cmd

    @staticmethod
    def _available(name: str) -> bool:
        module_name = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmos-edge")
def cli() -> None:
    """llmos-edge: build, bundle, ship and run language models on edge devices."""


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI, mapping known failures to messages and exit codes in one place."""
    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except LlmosError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence
        if is_disk_full(exc):
            click.echo(UserError(f"disk full: {exc}", hints=["free disk space and retry"]).render(), err=True)
            sys.exit(2)
        traceback.print_exc()
        click.echo(
            "\nThis is a bug in llmos-edge. Please report it with the traceback above "
            "and the command you ran.",
            err=True,
        )
        sys.exit(1)
