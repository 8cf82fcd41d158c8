"""The shipped all-minilm-l6-v2 recipe built for rpi5 end to end, then served over real HTTP."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import llmos_edge
from llmos_edge import cache
from llmos_edge.runtime.config import load_config
from llmos_edge.runtime.server import RunningServer
from llmos_edge.runtime.smoke import EMBED_TEXTS, run_smoke
from llmos_edge.spec import load_recipe
from llmos_edge.stages import evaluate as ev
from llmos_edge.stages.source import resolve_source
from llmos_edge.toolchains import manager

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> llmos_edge.BuildResult:
    out = tmp_path_factory.mktemp("minilm") / "out"
    result: llmos_edge.BuildResult = llmos_edge.build(
        "rpi5", "all-minilm-l6-v2", out=out, unsigned=True, wheels=False, progress=False)
    return result


def _embed_http(url: str, texts: list[str]) -> np.ndarray:
    body = json.dumps({"model": "all-minilm-l6-v2", "input": texts}).encode()
    req = urllib.request.Request(url + "/v1/embeddings", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        data = json.loads(resp.read())["data"]
    return np.asarray([d["embedding"] for d in sorted(data, key=lambda d: d["index"])])


def test_int8_size_and_cosine_to_fp32_and_torch(built: llmos_edge.BuildResult) -> None:
    model = built.report["model"]
    assert model["quant"] == "int8"
    assert model["sizes"]["model_bytes"] <= 30_000_000, model["sizes"]  # measured 23.0 MB (fp32: 90.4 MB)
    assert model["quality"]["cosine_min"] >= 0.99, model["quality"]

    recipe = load_recipe("all-minilm-l6-v2")
    hf_dir = resolve_source(recipe.source, base_dir=Path(recipe.source_file).parent).path
    sentences = ev.eval_sentences(recipe.evaluation_text or "")
    export_key = next(s["key"] for s in model["stages"] if s["stage"] == "export")
    tc = manager.ensure("onnx-optimum", progress=False)
    fp32_min, _ = ev.torch_cosine(tc, hf_dir, cache.entry_dir("export", export_key), sentences)
    int8_min, _ = ev.torch_cosine(tc, hf_dir, built.model_dir, sentences)
    assert fp32_min >= 0.9999, "the fp32 export must match torch + mean pooling"
    assert int8_min >= 0.99, int8_min


def test_bundle_serves_embeddings_over_http(built: llmos_edge.BuildResult) -> None:
    config = load_config(built.bundle_dir / "config" / "runtime.json")
    golden = json.loads((built.bundle_dir / "smoke" / "golden.json").read_text())
    with RunningServer(config.with_overrides(host="127.0.0.1", port=0)) as server:
        vectors = _embed_http(server.url, [EMBED_TEXTS["anchor"], EMBED_TEXTS["similar"],
                                           EMBED_TEXTS["unrelated"]])
        assert vectors.shape == (3, 384)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
        similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
        assert similar > unrelated + 0.3, (similar, unrelated)
        report = run_smoke(server.url, golden)  # the bundle's own smoke: the embeddings check
        assert report["ok"] and report["kind"] == "embeddings", report
