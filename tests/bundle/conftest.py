"""Fixtures for bundle tests: small model folders (bytes are bytes to the bundler), real keys,
real targets from targets/, and a per-test cache so parallel runs never share state."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.bundle import BundleResult, BundleSpec, generate_keys, make_bundle
from llmos_edge.spec import Golden, load_target


def write_model_dir(folder: Path, name: str = "tiny", seed: int = 1) -> Path:
    """A model folder with a descriptor, a small graph and a >1 MiB weight file (two crypto chunks)."""
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    desc = {"schema_version": 1, "name": name, "task": "text-generation", "format": "onnx", "quant": "int8",
            "context_length": 128, "eos_token_ids": [2], "chat_template": None, "embedding": None}
    (folder / "llmos_model.json").write_text(json.dumps(desc))
    (folder / "model.onnx").write_bytes(rng.randbytes(4096))
    (folder / "model.onnx.data").write_bytes(rng.randbytes((1 << 20) + 12345))
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    return folder


def spec_for(model: Path, key: Path | None, target: str = "rpi4", **kw: Any) -> BundleSpec:
    base: dict[str, Any] = {
        "target": load_target(target), "recipe": "tiny-recipe", "version": "1.0.0", "models": {"tiny": model},
        "golden": (Golden(prompt="What is the capital of France?", expect_contains=("Paris",),
                          max_tokens=32),),
        "quality_report": {"perplexity": 17.9, "passed": True}, "toolchain_lock": {"onnx": "1.23.2"},
        "source_model_sha256": "ab" * 32, "signing_key": key, "wheels": False,
    }
    base.update(kw)
    return BundleSpec(**base)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no default key unless a test makes one
    monkeypatch.delenv("LLMOS_EDGE_SIGNING_KEY", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.delenv("LLMOS_DEVICE_KEY", raising=False)
    monkeypatch.delenv("LLMOS_DECRYPT_DIR", raising=False)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model_dir(tmp_path / "model")


@pytest.fixture
def signing_keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keys(tmp_path / "keys" / "release")


@pytest.fixture
def device_keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keys(tmp_path / "keys" / "device", device=True)


@pytest.fixture
def build(tmp_path: Path, model_dir: Path, signing_keys: tuple[Path, Path]) -> Callable[..., BundleResult]:
    """build(out_name="out", **spec overrides) -> a real bundle, signed with signing_keys[0]."""

    def _build(out_name: str = "out", **kw: Any) -> BundleResult:
        key = kw.pop("signing_key", signing_keys[0])
        return make_bundle(spec_for(kw.pop("model", model_dir), key, **kw), tmp_path / out_name)

    return _build


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`bundle_file`: every file of a representative bundle, so each gets its own flipped-byte test."""
    if "bundle_file" not in metafunc.fixturenames:
        return
    tmp = Path(tempfile.mkdtemp(prefix="llmos-bundle-files-"))
    old = os.environ.get("LLMOS_EDGE_CACHE")
    try:
        os.environ["LLMOS_EDGE_CACHE"] = str(tmp / "cache")
        priv, _ = generate_keys(tmp / "k")
        res = make_bundle(spec_for(write_model_dir(tmp / "m"), priv), tmp / "out")
        files = sorted(res.manifest["files"])
    finally:
        if old is None:
            os.environ.pop("LLMOS_EDGE_CACHE", None)
        else:
            os.environ["LLMOS_EDGE_CACHE"] = old
        shutil.rmtree(tmp, ignore_errors=True)
    metafunc.parametrize("bundle_file", files)


@pytest.fixture(name="spec_for")
def _spec_for() -> Callable[..., BundleSpec]:
    return spec_for


@pytest.fixture(name="write_model_dir")
def _write_model_dir() -> Callable[..., Path]:
    return write_model_dir


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[BundleResult, Path]:
    """One signed bundle per test module (and its public key); tests tamper with copies."""
    root = tmp_path_factory.mktemp("pristine")
    priv, pub = generate_keys(root / "release")
    return make_bundle(spec_for(write_model_dir(root / "m"), priv), root / "out"), pub
