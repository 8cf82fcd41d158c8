"""The device side is a stdlib-only package, packed into one deterministic file that runs with nothing
but the device's python3 (isolated, no site)."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_edge.deploy import remote
from llmos_edge.device import agent, pack, protocol

PACKAGE = Path(pack.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))


def _imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import | ast.ImportFrom)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_device_modules_import_only_the_standard_library(path: Path) -> None:
    """Every import, function-level ones too: a stdlib module, or a sibling (relative, one level)."""
    foreign = []
    for node in _imports(path):
        if isinstance(node, ast.ImportFrom) and node.level:
            sibling = node.module or ""
            ok = node.level == 1 and (not sibling or (PACKAGE / f"{sibling.split('.')[0]}.py").is_file())
        else:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            ok = all(n.split(".")[0] in sys.stdlib_module_names or n == "__future__" for n in names)
        if not ok:
            foreign.append(ast.unparse(node))
    assert foreign == [], f"{path.name} imports beyond the standard library: {foreign}"


def test_guard_catches_a_foreign_import(tmp_path: Path) -> None:
    """The walk above sees imports hidden in functions (so the guard can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import requests\n    from llmos_edge import errors\n")
    seen = [ast.unparse(n) for n in _imports(bad)]
    assert seen == ["import requests", "from llmos_edge import errors"]
    assert "requests" not in sys.stdlib_module_names


def test_packing_is_deterministic_and_complete() -> None:
    """Same sources, same bytes; the agent carries every module it needs, the updater only what it needs."""
    a, b = pack.script("agent", "llmos-agent"), pack.script("agent", "llmos-agent")
    assert a == b == pack.agent_script()
    assert pack.closure("updater") == ["protocol", "updater"]
    assert set(pack.closure("agent")) == set(pack.modules()) - {"updater"}
    assert f"sources sha256 {hashlib.sha256(b'').hexdigest()}" not in a.decode()
    assert b"llmos_edge" not in a.split(b"SOURCES = {")[1]  # nothing of the host package travels


def test_ssh_bootstrap_runs_the_packed_bytes() -> None:
    """remote.bootstrap() decompresses to exactly bin/llmos-agent, so what probes is what ships."""
    import base64
    import re
    import zlib

    packed = re.search(r"b64decode\('([^']+)'\)", remote.bootstrap())
    assert packed is not None
    assert zlib.decompress(base64.b64decode(packed.group(1))) == pack.agent_script()


def test_protocol_commands_are_the_agents() -> None:
    assert sorted(agent.COMMANDS) == sorted(protocol.COMMANDS)
    with pytest.raises(ValueError, match="not an agent command"):
        remote.Agent.argv(remote.Agent.__new__(remote.Agent), "statsu")


def test_packed_agent_runs_isolated_without_site(tmp_path: Path) -> None:
    """python3 -I -S: no site-packages, no user site, no PYTHONPATH; probe, status and boot answer."""
    script = tmp_path / "llmos-agent"
    script.write_bytes(pack.agent_script())
    for command in ("probe", "status", "boot"):
        proc = subprocess.run(
            ["/usr/bin/python3", "-I", "-S", str(script), command, "--root", str(tmp_path / "root")],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        assert proc.returncode == protocol.RC_OK and answer["ok"] is True, proc.stdout + proc.stderr
        if command == "probe":
            assert set(protocol.PROBE_KEYS) <= set(answer), set(protocol.PROBE_KEYS) - set(answer)
    assert not (tmp_path / "root").exists()  # asking changes nothing on a device with no install
    argv = ["/usr/bin/python3", "-I", "-S", str(script), "install", "--root", str(tmp_path / "r")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == protocol.RC_LOCKED and answer["ok"] is False  # no lock token: refused
    assert set(protocol.LOCK_KEYS) <= set(answer)


def test_packed_updater_runs_isolated_without_site(tmp_path: Path) -> None:
    script = tmp_path / "llmos-mender-module"
    script.write_bytes(pack.updater_script())
    proc = subprocess.run(["/usr/bin/python3", "-I", "-S", str(script), "SupportsRollback", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "Yes", proc.stdout + proc.stderr
