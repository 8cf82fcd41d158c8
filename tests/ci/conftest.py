"""Fixtures for the release pipeline: a real make_bundle builder over a small model folder."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds the `ci` package

from ci.pipeline.matrix import Job
from ci.pipeline.run import Built


def write_model(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "llmos_model.json").write_text(json.dumps({
        "schema_version": 1, "name": "ci-probe", "task": "text-generation", "format": "onnx",
        "quant": "fp32", "context_length": 64, "eos_token_ids": [0], "chat_template": None,
        "embedding": None}))
    (root / "model.onnx").write_bytes(weights)
    return root


BuilderFn = Callable[[Job, Path, str, "Path | None", bool], Built]


def bundle_builder(weights: Callable[[], bytes]) -> BuilderFn:
    """The real bundler (make_bundle, no wheels) standing in for the model stages, which need toolchains."""
    def build(job: Job, out: Path, version: str, key: Path | None, fresh: bool) -> Built:
        from llmos_edge.bundle import make_bundle
        from llmos_edge.bundle.spec import BundleSpec
        from llmos_edge.spec import load_target

        model = write_model(out / "model-src", weights())
        spec = BundleSpec(target=load_target(job.target), recipe=job.recipe, version=version,
                          models={"ci-probe": model}, signing_key=key, wheels=False)
        result = make_bundle(spec, out / "bundle")
        return Built(result.image, result.folder)

    return build


@pytest.fixture
def make_builder() -> Callable[[Callable[[], bytes]], BuilderFn]:
    """bundle_builder(weights): each build writes the model with weights() (vary it to break repro)."""
    return bundle_builder


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, Path]:
    from llmos_edge.bundle import generate_keys

    return generate_keys(tmp_path / "release")


@pytest.fixture
def matrix_file(tmp_path: Path) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text('schema_version = 1\nversion = "1.4.0"\nsource_date_epoch = 1735689600\n'
                    'targets = ["rpi5", "jetson-orin-nano"]\nrecipes = ["smollm2-135m-instruct"]\n')
    return path
