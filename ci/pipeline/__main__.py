"""`python -m ci.pipeline --matrix ci/matrix.toml --out release/ [--key signing.key]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmos_edge.errors import LlmosError

from .matrix import load_matrix
from .run import run_pipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ci.pipeline", description=__doc__)
    p.add_argument("--matrix", type=Path, default=Path("ci/matrix.toml"))
    p.add_argument("--out", type=Path, required=True, help="release-server folder to publish into")
    p.add_argument("--work", type=Path, default=Path("build/ci"), help="scratch folder for the builds")
    p.add_argument("--key", type=Path, help="Ed25519 signing key (llmos-edge keys generate)")
    p.add_argument("--only", action="append", default=[], help="run only jobs named RECIPE-TARGET")
    args = p.parse_args(argv)
    try:
        matrix = load_matrix(args.matrix)
        if args.only:
            from dataclasses import replace

            matrix = replace(matrix, jobs=tuple(j for j in matrix.jobs if j.name in args.only))
        result = run_pipeline(matrix, args.out, args.work, args.key)
    except LlmosError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"published": result.published, "timings": result.timings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
