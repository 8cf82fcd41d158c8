"""Hand-run measurement (not a test): image writer vs plain gzip level 6 on the same bundle folder.

Usage: .venv/bin/python tests/bundle/measure_image.py BUNDLE_FOLDER
"""

from __future__ import annotations

import gzip
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from llmos_edge.bundle.image import _entries, _tarinfo, write_image


def plain_gzip6(folder: Path, out: Path) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                  compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in _entries(folder):
            info = _tarinfo(p, p.relative_to(folder).as_posix(), 0)
            if info.isdir():
                tar.addfile(info)
            else:
                with open(p, "rb") as f:
                    tar.addfile(info, f)


def main() -> None:
    folder = Path(sys.argv[1])
    out = Path(tempfile.mkdtemp())
    results: dict[str, list[float]] = {"write_image": [], "gzip -6": []}
    for _ in range(3):
        for name, fn in (("write_image", lambda: write_image(folder, out / "a.tar.gz", 0)),
                         ("gzip -6", lambda: plain_gzip6(folder, out / "b.tar.gz"))):
            t0 = time.perf_counter()
            fn()
            results[name].append(time.perf_counter() - t0)
    a, b = statistics.median(results["write_image"]), statistics.median(results["gzip -6"])
    sa, sb = (out / "a.tar.gz").stat().st_size / 1e6, (out / "b.tar.gz").stat().st_size / 1e6
    print(f"write_image {a:.2f} s {sa:.1f} MB | gzip -6 {b:.2f} s {sb:.1f} MB | speedup {b / a:.2f}x, "
          f"size ratio {sa / sb:.3f}")


if __name__ == "__main__":
    main()
