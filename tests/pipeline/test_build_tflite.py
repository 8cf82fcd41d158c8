"""`build --format tflite` goes through the same pipeline: litert-torch export, gate, bundle, runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmos_edge
from llmos_edge.bundle import generate_keys, verify_bundle
from tests.fixtures_models import tiny_llama_hf_dir


@pytest.mark.slow
def test_tiny_decoder_tflite_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny-tfl.toml").write_text(
        'schema_version = 1\ntask = "text-generation"\ncontext_length = 2048\n'
        f'evaluation_text = "{"the quick brown fox jumps over the lazy dog " * 8}"\n'
        f'[source]\nkind = "local"\npath = "{tiny_llama_hf_dir()}"\n'
        "[quality]\nrequire_golden = false\nmax_perplexity_ratio = 1.5\n"
    )
    monkeypatch.setenv("LLMOS_EDGE_RECIPES_PATH", str(recipes))
    generate_keys(tmp_path / "k")
    result = llmos_edge.build(
        "host",
        "tiny-tfl",
        format="tflite",
        quant="int8",
        out=tmp_path / "out",
        signing_key=tmp_path / "k.key",
        wheels=False,
        progress=False,
    )
    manifest = verify_bundle(result.image, tmp_path / "k.pub")
    files = manifest.raw["files"]
    assert any(f.endswith("model.tflite") for f in files), sorted(files)
    assert result.report["model"]["format"] == "tflite"
    quality = result.report["model"]["quality"]
    assert quality["passed"] and quality["perplexity_ratio"] <= 1.5
    desc = (result.model_dir / "llmos_model.json").read_text()
    assert '"tflite"' in desc and '"context_length": 512' in desc  # capped: the KV cache is fixed at export
    from dataclasses import replace

    from llmos_edge.runtime.config import config_for_model_dirs
    from llmos_edge.runtime.runner import generate_to

    config = replace(config_for_model_dirs([result.model_dir]), audit_log=None)
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "temperature": 0}
    gen = generate_to(config, None, body, lambda _piece: None)
    assert gen.prompt_tokens > 0 and gen.completion_tokens + (gen.finish_reason == "stop") > 0
