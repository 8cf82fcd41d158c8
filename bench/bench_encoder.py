"""all-minilm-l6-v2 for rpi5, side by side: torch fp32 (sentence-transformers mean pooling, the
reference) vs the fp32 ONNX export vs the shipped int8: size, cosine, embedding latency.

Run by hand: .venv/bin/python bench/bench_encoder.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def _latency_ms(model_dir: Path, texts: list[str], repeat: int) -> float:
    """Median ms of one batch through the runtime's encoder engine (warm session, what the device runs)."""
    from llmos_edge.runtime.descriptor import read_descriptor
    from llmos_edge.runtime.engines import EngineOptions, create_engine

    engine = create_engine(model_dir, read_descriptor(model_dir),
                           EngineOptions(providers=("CPUExecutionProvider",), threads=0))
    engine.embed(texts)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        engine.embed(texts)
        times.append((time.perf_counter() - t0) * 1000)
    engine.close()
    return statistics.median(times)


def main() -> None:
    from llmos_edge.build_model import build_model
    from llmos_edge.plan import make_plan
    from llmos_edge.spec import load_recipe, load_target
    from llmos_edge.stages import evaluate as ev
    from llmos_edge.stages.model_dir import model_size_bytes
    from llmos_edge.stages.source import resolve_source
    from llmos_edge.toolchains import manager

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    recipe = load_recipe("all-minilm-l6-v2")
    built = build_model(make_plan(load_target("rpi5"), recipe), progress=False)
    assert built.reference_dir is not None
    hf_dir = resolve_source(recipe.source, base_dir=Path(recipe.source_file).parent).path
    texts = ev.eval_sentences(recipe.evaluation_text or "")
    tc = manager.ensure("onnx-optimum", progress=False)
    ref = ev.embed(built.reference_dir, texts)
    print(f"{len(texts)} sentences from the recipe's evaluation text; latency = median of {args.repeat}")
    print(f"{'model':<12}{'size MB':>9}{'ratio':>7}{'cos fp32 min':>14}{'cos torch min':>15}{'ms':>8}")
    fp32_ms = None
    for label, d in (("onnx fp32", built.reference_dir), ("onnx int8", built.model_dir)):
        cos_fp32 = float((ev.embed(d, texts) * ref).sum(axis=1).min())
        cos_torch, _ = ev.torch_cosine(tc, hf_dir, d, texts)
        ms = _latency_ms(d, texts, args.repeat)
        fp32_ms = fp32_ms or ms
        size = model_size_bytes(d) / 1e6
        print(f"{label:<12}{size:>9.1f}{size / (model_size_bytes(built.reference_dir) / 1e6):>7.2f}"
              f"{cos_fp32:>14.4f}{cos_torch:>15.4f}{ms:>8.1f}  ({ms / fp32_ms:.2f}x fp32 time)")
    print("goal: int8 cosine >= 0.99 (to fp32 export and to torch)")


if __name__ == "__main__":
    main()
