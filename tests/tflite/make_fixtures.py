"""Regenerate tests/tflite/data/ (tiny int8 TFLite models + torch fp32 references), run by hand.

    .venv/bin/python tests/tflite/make_fixtures.py [--env TOOLCHAIN_VENV]

Goes through the real stage (llmos_edge.stages.tflite) and toolchain worker, so the committed fixtures
are what the build produces. The fast tests then need only ai-edge-litert, not the 2 GB toolchain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from llmos_edge.fsutil import atomic_dir
from llmos_edge.stages import tflite
from llmos_edge.toolchains.manager import Toolchain

DATA = Path(__file__).resolve().parent / "data"
REF_IDS = [5, 9, 33, 70, 100, 2, 3, 4, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160]
REF_TEXTS = [
    "the capital of france is paris.",
    "edge device runs the model!",
    " ".join(["the edge model runs on the device"] * 6),
]  # longer than the 16-token signature


def make(tc: Toolchain, work: Path) -> None:
    here = Path(__file__).resolve().parent
    for kind in ("decoder", "encoder"):
        subprocess.run([str(tc.python), str(here / "tiny_models.py"), kind, str(work / kind)], check=True)
    dec, enc = DATA / "tiny-decoder-int8", DATA / "tiny-encoder-int8"
    with atomic_dir(dec) as tmp:  # a failed run leaves the committed fixture as it was
        tflite.export_decoder(
            tc,
            work / "decoder",
            tmp,
            name="tiny-decoder",
            quant="int8",
            context_length=64,
            prefill_length=8,
            on_progress=print,
        )
    logits = tflite.reference_logits(tc, work / "decoder", REF_IDS)
    np.savez(DATA / "tiny-decoder-ref.npz", ids=np.asarray(REF_IDS), logits=logits)
    with atomic_dir(enc) as tmp:
        tflite.export_encoder(
            tc, work / "encoder", tmp, name="tiny-encoder", quant="int8", seq_len=16, on_progress=print
        )
    emb = tflite.reference_embeddings(tc, work / "encoder", REF_TEXTS)
    np.savez(DATA / "tiny-encoder-ref.npz", embeddings=emb)
    (DATA / "tiny-encoder-ref.json").write_text(json.dumps(REF_TEXTS, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", type=Path, help="an existing venv with the tflite lock installed")
    args = ap.parse_args()
    tc = Toolchain("tflite", "adhoc", args.env, {}) if args.env else tflite.toolchain()
    with tempfile.TemporaryDirectory() as tmp:
        make(tc, Path(tmp))


if __name__ == "__main__":
    main()
