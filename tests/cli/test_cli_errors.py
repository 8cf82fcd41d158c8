"""The CLI maps every known failure to one message and an exit code; bugs get a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from cli_process import llmos

from llmos_edge.cli import main as cli_main

HERE = Path(__file__).parent


run_cli = llmos


def test_every_command_has_help() -> None:
    for name in sorted(cli_main.COMMANDS):
        cmd = cli_main.cli.get_command(click.Context(cli_main.cli), name)
        if cmd is None:
            continue  # an area not in this build is simply not offered
        result = run_cli(name, "--help")
        assert result.returncode == 0, (name, result.stderr)
        assert "Usage:" in result.stdout


def test_unknown_target_is_a_user_error() -> None:
    result = run_cli("plan", "--target", "toaster")
    assert result.returncode == 2
    assert "unknown target 'toaster'" in result.stderr
    assert "Things to try" in result.stderr and "Traceback" not in result.stderr


def test_unknown_recipe_is_a_user_error() -> None:
    result = run_cli("plan", "--recipe", "gpt-17")
    assert result.returncode == 2 and "unknown recipe 'gpt-17'" in result.stderr


def test_malformed_toml_names_file(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("schema_version = 1\n[platform\n")
    result = run_cli("targets", "show", "broken", env={"LLMOS_EDGE_TARGETS_PATH": str(tmp_path)})
    assert result.returncode == 2
    assert "broken.toml" in result.stderr and "malformed TOML" in result.stderr


def test_plan_refusal_exit_code() -> None:
    result = run_cli("plan", "--target", "rpi3-armv7")
    assert result.returncode == 2 and "armv7l" in result.stderr


def test_plan_json_is_machine_readable() -> None:
    result = run_cli("plan", "--target", "rpi5", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["quant"] == "int4" and data["format"] == "onnx-genai" and data["block_size"] == 32


def test_targets_and_recipes_listing_json() -> None:
    targets = json.loads(run_cli("targets", "list", "--json").stdout)
    assert {"rpi4", "rpi5", "jetson-orin-nano", "esp32s3-host-offload", "host"} <= {
        t["name"] for t in targets
    }
    assert "rpi-base" not in {t["name"] for t in targets}
    recipes = json.loads(run_cli("recipes", "list", "--json").stdout)
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= {r["name"] for r in recipes}


def test_a_bug_prints_traceback_and_asks_for_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @click.command("explode")
    def explode() -> None:
        raise ZeroDivisionError("internal invariant")

    monkeypatch.setitem(cli_main.cli.commands, "explode", explode)
    with pytest.raises(SystemExit) as info:
        cli_main.main(["explode"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "please report" in err.lower()


def test_disk_full_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    @click.command("fill")
    def fill() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(cli_main.cli.commands, "fill", fill)
    with pytest.raises(SystemExit) as info:
        cli_main.main(["fill"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "Traceback" not in err
