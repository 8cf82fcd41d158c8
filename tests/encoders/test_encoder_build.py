"""A feature-extraction recipe through `llmos_edge.build()`: optimum export, int8, cosine gate, bundle,
served over real HTTP, smoke-tested; and stage keys that follow the worker code."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llmos_edge
from llmos_edge import cache
from llmos_edge.errors import CheckFailed
from llmos_edge.runtime.client import get_json
from llmos_edge.runtime.config import load_config
from llmos_edge.runtime.server import RunningServer
from llmos_edge.runtime.smoke import run_smoke, smoke_with_config


def _build(env: Path, recipe: str, out: str, **kw: object) -> llmos_edge.BuildResult:
    result: llmos_edge.BuildResult = llmos_edge.build(
        "host", recipe, out=env / out, quant="int8", unsigned=True, wheels=False, progress=False, **kw)
    return result


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def test_encoder_recipe_builds_serves_and_smokes(encoder_recipes: Path, same_texts: dict[str, str]) -> None:
    result = _build(encoder_recipes, "tiny-enc", "a")
    desc = json.loads((result.model_dir / "llmos_model.json").read_text())
    assert (desc["task"], desc["format"], desc["quant"]) == ("feature-extraction", "onnx", "int8")
    assert desc["embedding"] == {"pooling": "mean", "normalize": True, "dim": 32, "max_length": 128}
    quality = result.report["model"]["quality"]
    assert quality["passed"] and quality["cosine_min"] >= 0.9, quality
    sizes = result.report["model"]["sizes"]
    assert sizes["model_bytes"] < sizes["reference_bytes"], "int8 must be smaller than the fp32 export"

    golden = json.loads((result.bundle_dir / "smoke" / "golden.json").read_text())
    assert golden["prompts"] == [], "encoders have no golden prompts: smoke must check embeddings"
    config = load_config(result.bundle_dir / "config" / "runtime.json")
    report = smoke_with_config(config, {**golden, "embedding_check": same_texts})
    assert report["ok"] and report["kind"] == "embeddings", report

    with RunningServer(config.with_overrides(host="127.0.0.1", port=0)) as server:
        models = get_json(server.url + "/v1/models")["data"]
        assert [m["task"] for m in models] == ["feature-extraction"]
        data = _post(server.url + "/v1/embeddings", {"model": "tiny-enc", "input": ["a", "b c"]})["data"]
        vectors = np.asarray([d["embedding"] for d in data])
        assert vectors.shape == (2, 32)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        assert run_smoke(server.url, {**golden, "embedding_check": same_texts})["ok"]


def test_encoder_quality_gate_failure_leaves_no_output(encoder_recipes: Path) -> None:
    with pytest.raises(CheckFailed, match="cosine"):
        _build(encoder_recipes, "tiny-enc-strict", "strict")
    assert not (encoder_recipes / "strict").exists()


def test_edited_worker_reruns_its_stages(
    encoder_recipes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug this guards: a changed worker script silently reused outputs made by its old code."""
    copy = tmp_path / "pkg"
    shutil.copytree(Path(cache.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "_PKG", copy)  # key from a private copy; the real files stay untouched
    _build(encoder_recipes, "tiny-enc", "first")
    warm = _build(encoder_recipes, "tiny-enc", "warm")
    assert all(s["cache_hit"] for s in warm.report["model"]["stages"] if s["stage"] != "fetch")

    with (copy / "toolchains" / "workers" / "optimum_worker.py").open("a") as f:
        f.write(f"\n# edit {uuid.uuid4()}\n")  # unique: a stale entry from an earlier run cannot match
    edited = _build(encoder_recipes, "tiny-enc", "edited")
    ran = {s["stage"] for s in edited.report["model"]["stages"] if s["cache_hit"] is False}
    assert {"export", "quantize", "evaluate"} <= ran, edited.report["model"]["stages"]
