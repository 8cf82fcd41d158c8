"""Output a user can copy: tables never cut identifiers (piped, narrow terminal, COLUMNS=40), and
--target accepts exact names, aliases and unambiguous prefixes, or lists the close matches."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from cli_process import llmos
from click.testing import CliRunner

from llmos_edge import spec
from llmos_edge.cli.main import cli
from llmos_edge.errors import SpecError, UserError

TARGETS = [t.name for t in spec.list_targets()]


run_cli = llmos


def test_targets_list_piped_and_grepped_exactly_as_typed() -> None:
    """`llmos-edge targets list | grep esp32s3-host-offload`, with a 40-column COLUMNS."""
    env = {**os.environ, "COLUMNS": "40"}
    cmd = f"{sys.executable} -m llmos_edge targets list | grep esp32s3-host-offload"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("esp32s3-host-offload ")
    full = run_cli("targets", "list", env={"COLUMNS": "40"}).stdout
    names = {line.split()[0] for line in full.splitlines()[2:] if line.strip()}
    assert names == set(TARGETS)
    assert "…" not in full


def _run_in_pty(args: list[str], cols: int) -> str:
    """Run the CLI on a real pseudo-terminal `cols` wide, as a user at a narrow terminal would."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmos_edge", *args], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(master)
    return out.decode(errors="replace")


@pytest.mark.parametrize("cols", [40, 200])
def test_targets_list_on_a_terminal_keeps_every_name_whole(cols: int) -> None:
    text = _run_in_pty(["targets", "list"], cols)
    for name in TARGETS:
        assert name in text, (name, text)
    assert "…" not in text


def test_clirunner_tables_are_plain_and_whole() -> None:
    result = CliRunner().invoke(cli, ["targets", "list"], env={"COLUMNS": "40"}, terminal_width=40)
    assert result.exit_code == 0, result.output
    assert all(any(line.startswith(n + " ") for line in result.output.splitlines()) for n in TARGETS)


def test_markup_in_a_description_is_shown_as_text(tmp_path: Path) -> None:
    src = spec.target_files()["host"].read_text()
    (tmp_path / "weird.toml").write_text(src.replace('description = "', 'description = "[red]x[/red] ', 1))
    proc = run_cli("targets", "list", env={"LLMOS_EDGE_TARGETS_PATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "[red]x[/red]" in proc.stdout


# --- target names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "resolved"),
    [
        ("jetson", "jetson-orin-nano"),
        ("orin-nano", "jetson-orin-nano"),
        ("esp32", "esp32s3-host-offload"),
        ("rpi5-lit", "rpi5-litert"),
        ("rpi5", "rpi5"),
        ("host", "host"),
    ],
)
def test_alias_and_prefix_resolve(typed: str, resolved: str) -> None:
    assert spec.load_target(typed).name == resolved


def test_plan_target_jetson_through_the_cli() -> None:
    proc = run_cli("plan", "--target", "jetson", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"target": "jetson-orin-nano"' in proc.stdout


def test_ambiguous_prefix_lists_the_matches() -> None:
    proc = run_cli("plan", "--target", "rpi")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "ambiguous" in proc.stderr
    for name in ("rpi4", "rpi5", "rpi5-litert"):
        assert f"--target {name}\n" in proc.stderr
    assert "rpi-base" not in proc.stderr, "an abstract base is not a choice"


@pytest.mark.parametrize("typed", ["jetsn", "rpi6", "", "../host", "ho\x1bst", "x" * 5000])
def test_unknown_names_are_refused_with_close_matches(typed: str) -> None:
    with pytest.raises(UserError) as ei:
        spec.load_target(typed)
    assert "unknown target" in ei.value.message
    if typed == "jetsn":
        assert "jetson" in ei.value.hints[0]
    assert "\x1b" not in ei.value.message  # echoed as repr


def test_aliases_are_not_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-orin.toml").write_text('schema_version = 1\nextends = "jetson-orin-nano"\n')
    monkeypatch.setenv("LLMOS_EDGE_TARGETS_PATH", str(tmp_path))
    assert spec.load_target("my-orin").aliases == ()
    assert spec.load_target("jetson").name == "jetson-orin-nano"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('aliases = ["jetson"]', "also an alias of"),
        ('aliases = ["host"]', "already the name of a target"),
        ("aliases = 3", "must be a list of names"),
    ],
)
def test_bad_aliases_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, message: str
) -> None:
    (tmp_path / "other.toml").write_text(f'schema_version = 1\nextends = "host"\n{content}\n')
    monkeypatch.setenv("LLMOS_EDGE_TARGETS_PATH", str(tmp_path))
    with pytest.raises(SpecError, match=message) as ei:
        spec.load_target("jets")
    assert "other.toml" in ei.value.file
