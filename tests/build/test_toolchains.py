"""Toolchains: exact-pinned locks, install once under a file lock, ready marker, doctor, CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmos_edge.cli.toolchain_cmds import toolchain
from llmos_edge.errors import BugError, UserError
from llmos_edge.toolchains import manager
from llmos_edge.toolchains.contract import check_response, run_worker


@pytest.mark.parametrize("name", sorted(manager.TOOLCHAINS))
def test_locks_are_exact_pins(name: str) -> None:
    lines = [ln for ln in manager.lock_path(name).read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines and all("==" in ln and ">" not in ln and "<" not in ln for ln in lines)
    pins = manager.resolve(name).packages
    assert pins["torch"] == "2.13.0+cpu"
    assert ("onnxruntime-genai" in pins) == (name == "onnx-genai")
    assert pins["transformers"].startswith("4.57." if name == "onnx-optimum" else "5.")  # optimum needs <4.58


def test_env_dir_is_named_after_lock_hash(private_cache: Path) -> None:
    tc = manager.resolve("onnx-genai")
    assert tc.env_dir.parent == private_cache / "toolchains" and tc.env_dir.name.endswith(tc.lock_hash)
    assert tc.packages["onnxruntime-genai"] == "0.18.0" and tc.lock_info()["name"] == "onnx-genai"


def test_unknown_toolchain_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown toolchain"):
        manager.resolve("nope")


@pytest.fixture
def tiny_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real one-package toolchain (pip from the registry/cache), so install logic runs for real."""
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "tiny.txt").write_text("# test lock\niniconfig==2.3.1\n")
    monkeypatch.setattr(manager, "LOCKS_DIR", locks)
    monkeypatch.setitem(manager.TOOLCHAINS, "tiny", ("test", ("iniconfig",)))
    monkeypatch.setenv("LLMOS_EDGE_CACHE", str(tmp_path / "cache"))
    return "tiny"


def test_concurrent_installs_install_once_and_reuse(tiny_lock: str) -> None:
    results: list[manager.Toolchain] = []
    threads = [
        threading.Thread(target=lambda: results.append(manager.ensure(tiny_lock, progress=False)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0].ready and results[0].env_dir == results[1].env_dir
    marker = results[0].env_dir / manager.READY
    mtime = marker.stat().st_mtime
    assert manager.ensure(tiny_lock, progress=False).ready and marker.stat().st_mtime == mtime  # reused
    assert manager.doctor(tiny_lock)[0] is True


def test_half_installed_env_is_never_reused(tiny_lock: str) -> None:
    tc = manager.resolve(tiny_lock)
    (tc.env_dir / "bin").mkdir(parents=True)
    (tc.env_dir / "bin" / "python").write_text("#!/bin/false\n")  # looks like an env, no ready marker
    assert not tc.ready
    ok, detail = manager.doctor(tiny_lock)
    assert not ok and "not installed" in detail
    tc2 = manager.ensure(tiny_lock, progress=False)
    assert tc2.ready and tc2.python.resolve().name.startswith("python")


def test_failed_install_raises_user_error_without_marker(tiny_lock: str, tmp_path: Path) -> None:
    (manager.LOCKS_DIR / "tiny.txt").write_text("this-package-does-not-exist-llmos==0.0.1\n")
    with pytest.raises(UserError, match="installing toolchain tiny failed"):
        manager.ensure(tiny_lock, progress=False)
    assert not manager.resolve(tiny_lock).ready


def test_contract_error_kinds_map_to_errors() -> None:
    with pytest.raises(UserError) as ei:
        check_response(
            {"contract": 1, "ok": False, "error": {"kind": "unsupported_architecture", "message": "no"}},
            "w.py",
        )
    assert getattr(ei.value, "kind", None) == "unsupported_architecture"
    with pytest.raises(BugError, match="contract 2"):
        check_response({"contract": 2, "ok": True}, "w.py")
    with pytest.raises(BugError, match="internal"):
        check_response({"contract": 1, "ok": False, "error": {"kind": "internal", "message": "x"}}, "w.py")


def test_real_worker_roundtrip_and_unknown_op() -> None:
    tc = manager.ensure("onnx-genai", progress=False)
    with pytest.raises(BugError, match="unknown op"):
        run_worker(tc, "genai_worker.py", {"op": "no_such_op"})


def test_cli_list_and_doctor_json() -> None:
    runner = CliRunner()
    res = runner.invoke(toolchain, ["list", "--json"])
    assert res.exit_code == 0
    names = {r["name"] for r in json.loads(res.output)}
    assert names == set(manager.TOOLCHAINS)
    res = runner.invoke(toolchain, ["doctor", "onnx-genai", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["onnx-genai"]["ok"] is True
