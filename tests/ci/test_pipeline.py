"""The release pipeline: reproducibility check, signing, SBOM/provenance, release-server layout."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ci.pipeline.matrix import load_matrix
from ci.pipeline.run import run_pipeline
from llmos_edge.errors import CheckFailed, SpecError, UserError

WEIGHTS = bytes(range(256)) * 32


Factory = Callable[[Callable[[], bytes]], Any]


def _release(tmp_path: Path, name: str, matrix_file: Path, key: Path | None, make_builder: Factory) -> Path:
    out = tmp_path / name
    run_pipeline(load_matrix(matrix_file), out, tmp_path / f"work-{name}", key, make_builder(lambda: WEIGHTS))
    return out


def test_two_matrix_runs_publish_identical_images(
        tmp_path: Path, matrix_file: Path, signing_key: tuple[Path, Path], make_builder: Factory) -> None:
    a = _release(tmp_path, "a", matrix_file, signing_key[0], make_builder)
    b = _release(tmp_path, "b", matrix_file, signing_key[0], make_builder)
    ia, ib = json.loads((a / "index.json").read_text()), json.loads((b / "index.json").read_text())
    assert [e["sha256"] for e in ia["images"]] == [e["sha256"] for e in ib["images"]]
    assert {e["target"] for e in ia["images"]} == {"rpi5", "jetson-orin-nano"}
    assert (a / "SHA256SUMS").read_bytes() == (b / "SHA256SUMS").read_bytes()
    for e in ia["images"]:  # every provenance/SBOM byte is reproducible too
        stem = Path(e["path"])
        for suffix in (".sbom.json", ".provenance.json", ".provenance.sig"):
            assert (a / f"{stem}{suffix}").read_bytes() == (b / f"{stem}{suffix}").read_bytes()


def test_release_layout_hashes_signatures_and_provenance(
        tmp_path: Path, matrix_file: Path, signing_key: tuple[Path, Path], make_builder: Factory) -> None:
    from llmos_edge.bundle.keys import check_signature

    out = _release(tmp_path, "rel", matrix_file, signing_key[0], make_builder)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    entry = json.loads((out / "images/smollm2-135m-instruct-rpi5/latest.json").read_text())
    image = out / entry["path"]
    assert entry["version"] == "1.4.0" and image.name == "smollm2-135m-instruct-rpi5-1.4.0.tar.gz"
    assert (image.parent / "manifest.json").is_file() and (image.parent / "manifest.sig").is_file()
    prov_bytes = Path(f"{image}.provenance.json").read_bytes()
    check_signature(prov_bytes, Path(f"{image}.provenance.sig").read_bytes(), signing_key[1])
    prov = json.loads(prov_bytes)
    assert prov["subject"][0]["digest"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    meta = prov["predicate"]["runDetails"]["metadata"]
    assert meta["reproducible"] is True and len(meta["rebuild_sha256"]) == 2
    assert prov["predicate"]["buildDefinition"]["externalParameters"]["target"] == "rpi5"
    sbom = json.loads(Path(f"{image}.sbom.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert any(c["type"] == "machine-learning-model" and c["name"] == "ci-probe" for c in sbom["components"])
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == entry["sha256"]


def test_irreproducible_build_stops_the_release(
        tmp_path: Path, matrix_file: Path, make_builder: Factory) -> None:
    """A converter that writes different bytes each run (a real failure mode) is caught, nothing published."""
    counter = itertools.count()
    builder = make_builder(lambda: WEIGHTS + bytes([next(counter) % 256]))
    with pytest.raises(CheckFailed) as err:
        run_pipeline(load_matrix(matrix_file), tmp_path / "out", tmp_path / "work", None, builder)
    assert "different images" in err.value.message
    assert any("models/ci-probe/model.onnx" in h for h in err.value.hints)
    assert not (tmp_path / "out" / "index.json").exists()


def test_published_version_is_never_overwritten(
        tmp_path: Path, matrix_file: Path, make_builder: Factory) -> None:
    matrix = load_matrix(matrix_file)
    run_pipeline(matrix, tmp_path / "out", tmp_path / "w1", None, make_builder(lambda: WEIGHTS))
    with pytest.raises(UserError, match="already published with different bytes"):
        run_pipeline(matrix, tmp_path / "out", tmp_path / "w2", None, make_builder(lambda: WEIGHTS[::-1]))


def test_matrix_errors_name_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text('schema_version = 1\ntargets = ["rpi5", "no-such-board"]\n'
                   'recipes = ["smollm2-135m-instruct"]\n')
    with pytest.raises(SpecError) as err:
        load_matrix(bad)
    assert err.value.field == "targets" and "no-such-board" in err.value.problem
    bad.write_text('schema_version = 1\ntargets = []\nrecipes = ["x"]\n')
    with pytest.raises(SpecError, match="targets"):
        load_matrix(bad)
    bad.write_text('schema_version = 2\n')
    with pytest.raises(SpecError, match="schema_version"):
        load_matrix(bad)


def test_shipped_matrix_loads_and_excludes() -> None:
    repo = Path(__file__).resolve().parents[2]
    matrix = load_matrix(repo / "ci" / "matrix.toml")
    assert matrix.jobs and all(j.target and j.recipe for j in matrix.jobs)
    assert {"rpi5"} <= {j.target for j in matrix.jobs}
