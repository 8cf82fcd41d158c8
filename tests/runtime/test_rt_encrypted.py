"""An encrypted model dir (bundle side's Sealer + runtime/crypto.py) served through the runtime."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.runtime import crypto

from .rt_helpers import MakeConfig, StartServer, chat, http

encrypt = pytest.importorskip("llmos_edge.bundle.encrypt", reason="bundle encryption module not present")
keys = pytest.importorskip("llmos_edge.bundle.keys", reason="bundle keys module not present")


@pytest.fixture
def sealed_model(decoder_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = keys.generate_keys(tmp_path / "device", device=True)
    model = tmp_path / "bundle" / "models" / "dec"
    shutil.copytree(decoder_dir, model)
    sealer = encrypt.Sealer(pub)
    names = [p.name for p in model.iterdir() if encrypt.is_weight_file(p.name)]
    for name in names:
        sealer.seal_file(model / name, model, tmp_path / "bundle")
        (model / name).unlink()
    sealer.write_info(model, names)
    return model, priv


def test_encrypted_model_serves_with_device_key(
    make_config: MakeConfig,
    start_server: StartServer,
    sealed_model: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, priv = sealed_model
    monkeypatch.delenv("LLMOS_DEVICE_KEY", raising=False)
    srv = start_server(make_config([{"id": "dec", "path": model}], device_key=str(priv)))
    r = http("POST", srv.url + "/v1/chat/completions", chat("dec", max_tokens=4))
    assert r.status == 200, r.body
    assert not any(p.name.endswith((".onnx", ".data")) for p in model.iterdir())  # no plaintext next to it


def test_encrypted_model_without_key_fails_clearly(
    make_config: MakeConfig,
    start_server: StartServer,
    sealed_model: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _ = sealed_model
    monkeypatch.delenv("LLMOS_DEVICE_KEY", raising=False)
    srv = start_server(make_config([{"id": "dec", "path": model}]))
    r = http("POST", srv.url + "/v1/chat/completions", chat("dec"))
    assert r.status == 503 and r.json()["error"]["code"] == "model_load_failed"
    assert "key" in r.json()["error"]["message"].lower()
    assert http("GET", srv.url + "/health").status == 200


def _serve_encrypted(model: Path, priv: Path, tmp_path: Path, decrypt_dir: Path) -> tuple[str, Any]:
    """A real runtime process (`python -m llmos_edge.runtime serve`) on the sealed model."""
    cfg = tmp_path / "config" / "runtime.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"host": "127.0.0.1", "port": 0, "memory_budget_mb": 1024,
                               "device_key": str(priv), "models": [{"id": "dec", "path": str(model)}]}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LLMOS_DECRYPT_DIR": str(decrypt_dir)}
    env.pop("LLMOS_DEVICE_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmos_edge.runtime", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = re.search(r"http://\S+", line)
    if not url:
        proc.kill()
        raise AssertionError(line + (proc.stderr.read() if proc.stderr else ""))
    return url.group(), proc


@pytest.fixture
def decrypt_dir() -> Iterator[Path]:
    """A private folder on /dev/shm (tmpfs), so the test sees exactly what the runtime leaves."""
    if not crypto.is_memory_backed(Path("/dev/shm")):
        pytest.skip("/dev/shm is not a tmpfs here")
    d = Path(tempfile.mkdtemp(prefix="llmos-test-decrypt-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _plaintext_left(decrypt_dir: Path, plain: dict[str, str]) -> list[Path]:
    """Files under the decrypt folder, /dev/shm and /tmp (top level) whose bytes are a weight file."""
    sizes = {int(k.split(":")[0]) for k in plain}
    found = []
    for p in [*decrypt_dir.rglob("*"), *Path("/dev/shm").glob("*"), *Path("/tmp").glob("*")]:
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink() and p.stat().st_size in sizes \
                    and f"{p.stat().st_size}:{hashlib.sha256(p.read_bytes()).hexdigest()}" in plain:
                found.append(p)
    return found


def test_sigkill_leaves_no_plaintext(sealed_model: tuple[Path, Path], decoder_dir: Path, tmp_path: Path,
                                     decrypt_dir: Path) -> None:
    """Once every kill -9 left another decrypted copy in /dev/shm; now the copy is unlinked as soon
    as the engine has loaded it."""
    model, priv = sealed_model
    plain = {f"{p.stat().st_size}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
             for p in decoder_dir.iterdir() if encrypt.is_weight_file(p.name)}
    url, proc = _serve_encrypted(model, priv, tmp_path, decrypt_dir)
    try:
        assert http("POST", url + "/v1/chat/completions", chat("dec", max_tokens=4)).status == 200
        assert list(decrypt_dir.iterdir()) == []  # loaded, and already gone from the tmpfs
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert _plaintext_left(decrypt_dir, plain) == []
    assert list(decrypt_dir.iterdir()) == []


def test_stale_copies_of_dead_runtimes_are_swept_at_start(sealed_model: tuple[Path, Path], tmp_path: Path,
                                                          decrypt_dir: Path) -> None:
    """A kill during loading leaves llmos-model-<pid>-*; the next start removes those of dead pids."""
    model, priv = sealed_model
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = decrypt_dir / f"llmos-model-{dead.pid}-abcd1234"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"plaintext weights")
    alive = decrypt_dir / f"llmos-model-{os.getpid()}-keepme00"  # a live runtime's copy: left alone
    alive.mkdir()
    url, proc = _serve_encrypted(model, priv, tmp_path, decrypt_dir)
    try:
        assert not stale.exists()  # gone at start, before any model was loaded
        assert http("POST", url + "/v1/chat/completions", chat("dec", max_tokens=2)).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not stale.exists() and alive.exists()
    assert sorted(p.name for p in decrypt_dir.iterdir()) == [alive.name]
