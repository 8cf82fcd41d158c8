"""An encrypted model dir (bundle side's Sealer + runtime/crypto.py) served through the runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
