"""`serve`, `run` and `smoke` verify a bundle (signature, then every file) before loading anything.

The attack this answers: a bundle whose config/runtime.json sends the audit log elsewhere and
turns masking off, re-hashed and unsigned, used to be served as is. Real processes, real model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_edge.bundle.keys import generate_keys

from .rt_helpers import chat, http, seal

PY = sys.executable
GOLDEN = {"model": "dec", "limits": {"max_first_token_ms": 60000, "min_tokens_per_s": 0.01},
          "prompts": [{"name": "any", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}]}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The user's config folder holds the default key; the cache (host audit log) is per test."""
    e = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "LLMOS_EDGE_CACHE": str(tmp_path / "cache"),
         "PYTHONUNBUFFERED": "1"}
    e.pop("LLMOS_EDGE_SIGNING_KEY", None)
    return e


@pytest.fixture
def key(tmp_path: Path) -> Path:
    priv, _ = generate_keys(tmp_path / "xdg" / "llmos-edge" / "signing")
    return priv


def _bundle(root: Path, decoder_dir: Path, key: Path | None) -> Path:
    shutil.copytree(decoder_dir, root / "models" / "dec")
    (root / "config").mkdir(parents=True)
    cfg = {"host": "127.0.0.1", "port": 0, "memory_budget_mb": 1024,
           "audit_log": "../../state/requests.jsonl", "audit_raw": False,
           "models": [{"id": "dec", "path": "../models/dec", "max_concurrency": 1, "max_queue": 4}]}
    (root / "config" / "runtime.json").write_text(json.dumps(cfg))
    (root / "smoke").mkdir()
    (root / "smoke" / "golden.json").write_text(json.dumps(GOLDEN))
    return seal(root, key)


def _tamper(root: Path, elsewhere: Path) -> None:
    """What the attacker writes: audit log to a place they read, masking off."""
    cfg_path = root / "config" / "runtime.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(audit_log=str(elsewhere), audit_raw=True)
    cfg_path.write_text(json.dumps(cfg))


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "llmos_edge", *args], capture_output=True, text=True, timeout=180,
                          env=env)


def _commands(b: Path) -> list[list[str]]:
    return [["serve", str(b), "--port", "0"], ["run", str(b), "Hi", "--max-tokens", "2"], ["smoke", str(b)]]


def test_tampered_signed_bundle_refused_by_serve_run_smoke(decoder_dir: Path, tmp_path: Path, key: Path,
                                                           env: dict[str, str]) -> None:
    b = _bundle(tmp_path / "b", decoder_dir, key)
    elsewhere = tmp_path / "attacker" / "audit.jsonl"
    _tamper(b, elsewhere)
    for args in _commands(b):
        p = _cli(args, env)
        assert p.returncode == 4, (args, p.stdout, p.stderr)
        assert "does not match its manifest" in p.stderr and "config/runtime.json" in p.stderr
        assert "Traceback" not in p.stderr and "http://" not in p.stdout
    assert not elsewhere.parent.exists()


def test_rehashed_unsigned_bundle_refused_unless_allow_unsigned(decoder_dir: Path, tmp_path: Path, key: Path,
                                                                env: dict[str, str]) -> None:
    """The exact case reported: tampered config, manifest re-made, signature dropped."""
    b = _bundle(tmp_path / "b", decoder_dir, key)
    elsewhere = tmp_path / "attacker" / "audit.jsonl"
    _tamper(b, elsewhere)
    seal(b, None)
    for args in _commands(b):
        p = _cli(args, env)
        assert p.returncode == 4, (args, p.stdout, p.stderr)
        assert "is not signed" in p.stderr and "--allow-unsigned" in p.stderr
    assert not elsewhere.parent.exists()
    # explicit, warned and recorded: the host audit log and the runtime's own audit log both say so
    p = _cli(["run", str(b), "Hi", "--max-tokens", "2", "--allow-unsigned"], env)
    assert p.returncode == 0, p.stderr
    assert "NOT signature-checked" in p.stderr
    host_audit = [json.loads(x) for x in (tmp_path / "cache" / "audit.jsonl").read_text().splitlines()]
    assert host_audit[-1]["event"] == "accepted-unsigned" and host_audit[-1]["bundle"] == str(b)
    url, proc = _serve([str(b), "--allow-unsigned"], env)
    try:
        assert http("POST", url + "/v1/chat/completions", chat("dec", max_tokens=2)).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    events = [json.loads(x) for x in elsewhere.read_text().splitlines()]
    assert events[0]["event"] == "accepted-unsigned" and events[0]["bundles"] == [str(b)]


def _serve(args: list[str], env: dict[str, str]) -> tuple[str, subprocess.Popen[str]]:
    proc = subprocess.Popen([PY, "-m", "llmos_edge", "serve", *args, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"http://\S+", line)
    if not found:
        proc.kill()
        raise AssertionError(line + (proc.stderr.read() if proc.stderr else ""))
    return found.group(), proc


def test_signed_bundle_serves_with_default_key_as_typed(decoder_dir: Path, tmp_path: Path, key: Path,
                                                        env: dict[str, str]) -> None:
    b = _bundle(tmp_path / "b", decoder_dir, key)
    url, proc = _serve([str(b)], env)
    try:
        assert http("POST", url + "/v1/chat/completions", chat("dec", max_tokens=2)).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not (tmp_path / "cache" / "audit.jsonl").exists()  # nothing to record: it was verified


def test_wrong_key_and_no_key(decoder_dir: Path, tmp_path: Path, key: Path, env: dict[str, str]) -> None:
    other, other_pub = generate_keys(tmp_path / "other" / "k")
    b = _bundle(tmp_path / "b", decoder_dir, other)
    p = _cli(["run", str(b), "Hi"], env)  # default key is not the signer
    assert p.returncode == 4 and "does not verify" in p.stderr
    p = _cli(["run", str(b), "Hi", "--max-tokens", "2", "--key", str(other_pub)], env)
    assert p.returncode == 0, p.stderr
    shutil.rmtree(tmp_path / "xdg")
    p = _cli(["smoke", str(b)], env)
    assert p.returncode == 4 and "no public key given" in p.stderr


def test_added_file_and_bundle_without_manifest_refused(decoder_dir: Path, tmp_path: Path, key: Path,
                                                        env: dict[str, str]) -> None:
    b = _bundle(tmp_path / "b", decoder_dir, key)
    (b / "models" / "dec" / "extra.py").write_text("import os\n")
    p = _cli(["run", str(b), "Hi"], env)
    assert p.returncode == 4 and "extra.py: added" in p.stderr
    (b / "models" / "dec" / "extra.py").unlink()
    (b / "manifest.json").unlink()
    p = _cli(["run", str(b), "Hi"], env)
    assert p.returncode == 4 and "no manifest.json" in p.stderr
