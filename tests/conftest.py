"""Shared fixtures: tiny real models built once through the real toolchains (see fixtures_models.py).

The returned folders are shared and cached across sessions: copy before modifying
(fixtures_models.copy_model). First use installs the toolchains (minutes); later runs are instant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.paths import cache_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_models


@pytest.fixture(scope="session")
def tiny_decoder_dir() -> Path:
    """onnx-genai int4 model dir of a random 2-layer hidden-64 Llama with a ChatML BPE tokenizer."""
    return fixtures_models.tiny_decoder_dir("int4")


@pytest.fixture(scope="session")
def tiny_decoder_fp32_dir() -> Path:
    """The same tiny Llama exported fp32 (the quality-gate reference in build tests)."""
    return fixtures_models.tiny_decoder_dir("fp32")


@pytest.fixture(scope="session")
def tiny_encoder_dir() -> Path:
    """onnx feature-extraction dir: random 2-layer hidden-32 BERT (fp32), WordPiece tokenizer."""
    return fixtures_models.tiny_encoder_dir("fp32")


@pytest.fixture(scope="session")
def smollm2_int4_dir() -> Path:
    """The real SmolLM2-135M-Instruct int4 build (slow: mark tests using it @pytest.mark.slow)."""
    return fixtures_models.smollm2_int4_dir()


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """LLMOS_EDGE_CACHE in tmp_path; toolchains/ and dl/ link to the real ones (installs take minutes)."""
    real = cache_root()
    root = tmp_path / "cache"
    root.mkdir()
    for name in ("toolchains", "dl"):
        (real / name).mkdir(parents=True, exist_ok=True)
        os.symlink(real / name, root / name)
    monkeypatch.setenv("LLMOS_EDGE_CACHE", str(root))
    yield root


@pytest.fixture(scope="session")
def tiny_llama_hf() -> Path:
    import fixtures_models

    return fixtures_models.tiny_llama_hf_dir()
