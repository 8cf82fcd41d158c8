"""Hand-run measurement (not a test): bundle build / verify / encrypt / decrypt times for a model dir.

Usage: .venv/bin/python tests/bundle/measure_bundle.py [MODEL_DIR]   (default: 100 MB of random weights)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _timed(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="llmos-measure-"))
    os.environ["LLMOS_EDGE_CACHE"] = str(work / "cache")
    from llmos_edge.bundle import BundleSpec, generate_keys, make_bundle, verify_bundle
    from llmos_edge.runtime.crypto import prepare_model_dir, release_model_dir
    from llmos_edge.spec import load_target

    if len(sys.argv) > 1:
        model = Path(sys.argv[1])
    else:
        model = work / "model"
        model.mkdir()
        (model / "llmos_model.json").write_text(json.dumps({"schema_version": 1, "name": "m"}))
        (model / "model.onnx").write_bytes(os.urandom(1 << 20))
        (model / "model.onnx.data").write_bytes(os.urandom(100 << 20))
    size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    priv, pub = generate_keys(work / "k")
    dpriv, dpub = generate_keys(work / "d", device=True)

    def spec(**kw: Any) -> BundleSpec:
        return BundleSpec(target=load_target("rpi4"), recipe="m", version="1.0.0", models={"m": model},
                          signing_key=priv, wheels=False, **kw)

    t_build, res = _timed(lambda: make_bundle(spec(), work / "out"))
    t_vfold, _ = _timed(lambda: verify_bundle(res.folder, pub))
    t_vimg, _ = _timed(lambda: verify_bundle(res.image, pub), runs=1)  # first: extract + verify
    t_enc, enc = _timed(lambda: make_bundle(spec(encrypt_for=dpub), work / "enc"))

    def dec() -> Path:
        out = prepare_model_dir(enc.folder / "models" / "m", dpriv)
        release_model_dir(out)
        return out

    t_dec, _ = _timed(dec)
    mb = size / 1e6
    print(f"model dir {mb:.0f} MB; image {res.image.stat().st_size / 1e6:.0f} MB (median of 3 unless noted)")
    for name, t in [("build (signed, no wheels)", t_build), ("verify folder", t_vfold),
                    ("verify image (extract+verify, 1 run)", t_vimg), ("build encrypted", t_enc),
                    ("decrypt to tmpfs", t_dec)]:
        print(f"{name:40s} {t:6.2f} s  {mb / t:7.1f} MB/s")


if __name__ == "__main__":
    main()
