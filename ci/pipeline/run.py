"""Run the matrix: build each image twice, refuse irreproducible ones, sign, describe and publish."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_edge.errors import CheckFailed
from llmos_edge.fsutil import sha256_file

from .matrix import Job, Matrix
from .provenance import dump, provenance, sbom
from .publish import Release, publish


@dataclass(frozen=True)
class Built:
    image: Path
    folder: Path


# (job, output folder, version, signing key, fresh) -> the image; fresh=True must not reuse caches
Builder = Callable[[Job, Path, str, "Path | None", bool], Built]


@dataclass
class PipelineResult:
    published: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)


def default_builder(job: Job, out: Path, version: str, key: Path | None, fresh: bool) -> Built:
    """The real build (`llmos-edge build`); the second build re-runs every stage (no_cache)."""
    from llmos_edge.pipeline import build

    result = build(job.target, job.recipe, out=out, signing_key=key, unsigned=key is None,
                   version=version, no_cache=fresh, progress=False)
    return Built(result.image, result.bundle_dir)


@contextlib.contextmanager
def _source_date(epoch: int) -> Iterator[None]:
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def _differences(a: Built, b: Built) -> list[str]:
    """Which bundle files differ between two builds: the lead for fixing a reproducibility bug."""
    fa = json.loads((a.folder / "manifest.json").read_text()).get("files", {})
    fb = json.loads((b.folder / "manifest.json").read_text()).get("files", {})
    diff = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    return diff or ["manifest.json itself (same files: check created/toolchain_lock/quality_report)"]


def run_job(job: Job, matrix: Matrix, work: Path, key: Path | None, builder: Builder,
            result: PipelineResult, out: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    first = builder(job, work / job.name / "build-1", matrix.version, key, False)
    t1 = time.monotonic()
    second = builder(job, work / job.name / "build-2", matrix.version, key, True)
    t2 = time.monotonic()
    hashes = [sha256_file(first.image), sha256_file(second.image)]
    if hashes[0] != hashes[1]:
        raise CheckFailed(f"{job.name}: two builds gave different images "
                          f"({hashes[0][:12]} vs {hashes[1][:12]})",
                          hints=["differing files: " + ", ".join(_differences(first, second)[:10]),
                                 "set SOURCE_DATE_EPOCH and check the toolchain lock is pinned"])
    manifest = json.loads((first.folder / "manifest.json").read_text())
    prov = provenance(manifest, first.image, hashes)
    sig = None
    if key is not None:
        from llmos_edge.bundle.keys import sign

        sig, _kid = sign(dump(prov), key)
    entry = publish(out, Release(first.image, first.folder, manifest, sbom(manifest, first.image), prov, sig))
    result.timings.append({"job": job.name, "build_1_s": round(t1 - t0, 1), "build_2_s": round(t2 - t1, 1),
                           "publish_s": round(time.monotonic() - t2, 1), "sha256": hashes[0]})
    return entry


def run_pipeline(matrix: Matrix, out: Path, work: Path, key: Path | None,
                 builder: Builder = default_builder) -> PipelineResult:
    """Every job in order; the first irreproducible or failing job stops the release."""
    result = PipelineResult()
    with _source_date(matrix.source_date_epoch):
        for job in matrix.jobs:
            result.published.append(run_job(job, matrix, work, key, builder, result, out))
    return result
