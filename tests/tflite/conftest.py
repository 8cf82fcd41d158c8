"""TFLite fixtures: committed tiny int8 models (real LiteRT graphs made by make_fixtures.py), the
tflite toolchain for slow tests, and the real SmolLM2 / MiniLM exports cached under the cache root."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="the TFLite engine needs the ai-edge-litert package")

from llmos_edge.runtime.engines import REGISTRY

DATA = Path(__file__).resolve().parent / "data"

# Until the runtime's engine registry lists tflite itself (one line per task in engines/__init__.py).
REGISTRY.setdefault(("tflite", "text-generation"), "..engine_tflite:TFLiteDecoderEngine")
REGISTRY.setdefault(("tflite", "feature-extraction"), "..engine_tflite:TFLiteEncoderEngine")


def _copy(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = DATA / name
    if not (src / "model.tflite").is_file():
        pytest.fail(f"{src} missing: run tests/tflite/make_fixtures.py")
    out = tmp_path_factory.mktemp(name) / name
    shutil.copytree(src, out)
    return out


@pytest.fixture
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny Llama (hidden 64, 2 layers) as int8 TFLite: cache 64, prefill_8."""
    return _copy("tiny-decoder-int8", tmp_path_factory)


@pytest.fixture
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny BERT (hidden 32) as int8 TFLite: fixed seq_len 16, mean pooling."""
    return _copy("tiny-encoder-int8", tmp_path_factory)


@pytest.fixture(scope="session")
def decoder_ref() -> dict[str, np.ndarray]:
    """Torch fp32 logits of the tiny Llama for a fixed id sequence."""
    with np.load(DATA / "tiny-decoder-ref.npz") as z:
        return {"ids": z["ids"], "logits": z["logits"]}


@pytest.fixture(scope="session")
def encoder_ref() -> tuple[list[str], np.ndarray]:
    import json

    texts = json.loads((DATA / "tiny-encoder-ref.json").read_text())
    with np.load(DATA / "tiny-encoder-ref.npz") as z:
        return texts, z["embeddings"]


@pytest.fixture(scope="session")
def tflite_tc() -> Iterator[object]:
    """The real tflite toolchain (installed from locks/tflite.txt on first use: minutes, ~2 GB)."""
    from llmos_edge.stages import tflite

    yield tflite.toolchain()
