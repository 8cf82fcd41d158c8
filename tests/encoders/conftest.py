"""Encoder-area fixtures: temporary recipes over the tiny BERT fixture (tests/fixtures_models.py)."""

from __future__ import annotations

from pathlib import Path

import fixtures_models
import pytest

EVAL = (
    "The capital of France is Paris. Edge devices run small language models. "
    "Quantization stores weights in fewer bits. A Raspberry Pi has four cores."
)


def write_encoder_recipe(folder: Path, name: str, *, min_cosine: float = 0.9) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(
        f'schema_version = 1\ntask = "feature-extraction"\nparams_m = 0.1\ncontext_length = 128\n'
        f'quant = "int8"\nevaluation_text = "{EVAL}"\n'
        f'[source]\nkind = "local"\npath = "{fixtures_models.tiny_bert_hf_dir()}"\n'
        f"[quality]\nrequire_golden = false\nmin_cosine = {min_cosine}\n"
    )
    return path


@pytest.fixture()
def encoder_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LLMOS_EDGE_RECIPES_PATH with `tiny-enc` and `tiny-enc-strict` (min cosine 1.0: int8 cannot pass)."""
    write_encoder_recipe(tmp_path / "recipes", "tiny-enc")
    write_encoder_recipe(tmp_path / "recipes", "tiny-enc-strict", min_cosine=1.0)
    monkeypatch.setenv("LLMOS_EDGE_RECIPES_PATH", str(tmp_path / "recipes"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    return tmp_path


@pytest.fixture()
def same_texts() -> dict[str, str]:
    """Smoke texts whose paraphrase IS the anchor: the tiny BERT is random, so its idea of "similar"
    is arbitrary; an identical sentence has cosine 1. The real MiniLM test uses the default texts."""
    return {"anchor": "edge devices run small models", "similar": "edge devices run small models",
            "unrelated": "quantization stores weights in fewer bits"}
