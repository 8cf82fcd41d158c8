"""Build-area fixtures: a private stage cache per test that still reuses the installed toolchains."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.paths import cache_root


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
