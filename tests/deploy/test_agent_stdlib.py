"""The device agent is one stdlib-only file: it runs with nothing but the device's python3."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from llmos_edge.deploy import agent

SOURCE = Path(agent.__file__)


def test_agent_imports_only_the_standard_library() -> None:
    tree = ast.parse(SOURCE.read_text())
    names = set()
    for node in ast.walk(tree):  # function-level imports too (fcntl, re, shlex are imported lazily)
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in the agent: {ast.unparse(node)}"
            names.add((node.module or "").split(".")[0])
    assert names - set(sys.stdlib_module_names) - {"__future__"} == set()


def test_agent_runs_without_site_packages(tmp_path: Path) -> None:
    """python3 -I -S: no site-packages, no user site, no PYTHONPATH; probe, status and boot answer."""
    for command in ("probe", "status", "boot"):
        proc = subprocess.run(
            ["/usr/bin/python3", "-I", "-S", str(SOURCE), command, "--root", str(tmp_path / "root")],
            capture_output=True, text=True, timeout=60,
        )
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        assert proc.returncode == 0 and answer["ok"] is True, proc.stdout + proc.stderr
    assert not (tmp_path / "root").exists()  # asking changes nothing on a device with no install
