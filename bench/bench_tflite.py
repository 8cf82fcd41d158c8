"""ONNX int4 (onnxruntime-genai) vs TFLite int8 (LiteRT) for SmolLM2 on this host, side by side.

    .venv/bin/python bench/bench_tflite.py [--onnx-dir D] [--tflite-dir D] [--reps 3] [--tokens 64]

Both engines run through the runtime's engine interface, interleaved in one process, on the same
chat prompt with greedy decoding and forced length (eos ignored). Prints per-engine medians and the
TFLite/ONNX ratios: model size, first-token latency (prefill + first decode), decode tokens/s, and
perplexity on the same token window of recipes/eval/wiki-mix.txt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from llmos_edge.paths import cache_root  # noqa: E402
from llmos_edge.runtime.descriptor import read_descriptor, weight_bytes  # noqa: E402
from llmos_edge.runtime.engines import REGISTRY, create_engine  # noqa: E402
from llmos_edge.runtime.engines.base import EngineOptions, GenParams  # noqa: E402

REGISTRY.setdefault(("tflite", "text-generation"), "..engine_tflite:TFLiteDecoderEngine")
PROMPT = "Write a short story about a robot that learns to paint."


def run_once(engine: Any, ids: list[int], tokens: int) -> tuple[float, float]:
    """(first-token seconds, decode tokens/s after the first) for a forced-length greedy run."""
    params = GenParams(max_tokens=tokens, temperature=0.0)
    t0 = time.perf_counter()
    first, n = 0.0, 0
    for _ in engine.generate(ids, params):
        n += 1
        if n == 1:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return first, (n - 1) / max(total - first, 1e-9)


def perplexity(kind: str, engine: Any, model_dir: Path, ids: list[int]) -> float:
    import numpy as np

    if kind == "tflite":
        return float(engine.perplexity(ids))
    from llmos_edge.stages.evaluate import decoder_nll

    nll, n = decoder_nll(model_dir, ids, window=len(ids))
    return float(np.exp(nll / max(n, 1)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx-dir", type=Path)
    default_tflite = cache_root() / "test-models" / "smollm2-tflite-int8-v1"
    ap.add_argument("--tflite-dir", type=Path, default=default_tflite)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.onnx_dir is None:
        import fixtures_models

        args.onnx_dir = fixtures_models.smollm2_int4_dir()
    dirs = {"onnx-int4": args.onnx_dir, "tflite-int8": args.tflite_dir}
    engines = {
        k: create_engine(d, read_descriptor(d), EngineOptions(threads=args.threads)) for k, d in dirs.items()
    }
    eval_text = (ROOT / "recipes" / "eval" / "wiki-mix.txt").read_text()
    tfl = engines["tflite-int8"]
    eval_ids = tfl.encode(eval_text, add_special_tokens=False)[: tfl.cache_length - 1]
    prompt_ids = {
        k: e.encode(e.render_chat([{"role": "user", "content": PROMPT}]), add_special_tokens=False)
        for k, e in engines.items()
    }
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in engines}
    for k, e in engines.items():  # warm-up
        run_once(e, prompt_ids[k], 4)
    for _ in range(args.reps):
        for k, e in engines.items():
            samples[k].append(run_once(e, prompt_ids[k], args.tokens))
    rows = {}
    for k, e in engines.items():
        rows[k] = {
            "size_mb": weight_bytes(dirs[k]) / 1e6,
            "first_token_ms": 1000 * statistics.median(s[0] for s in samples[k]),
            "decode_tok_s": statistics.median(s[1] for s in samples[k]),
            "perplexity": perplexity(k.split("-")[0], e, dirs[k], eval_ids),
        }
    print(
        f"SmolLM2-135M-Instruct, {args.threads} threads, {args.reps} reps x {args.tokens} tokens, "
        f"prompt {len(prompt_ids['tflite-int8'])} tokens, perplexity over {len(eval_ids)} tokens (medians)"
    )
    print(f"{'metric':<16}{'onnx-int4':>12}{'tflite-int8':>14}{'tflite/onnx':>13}")
    for m in ("size_mb", "first_token_ms", "decode_tok_s", "perplexity"):
        a, b = rows["onnx-int4"][m], rows["tflite-int8"][m]
        print(f"{m:<16}{a:>12.2f}{b:>14.2f}{b / a:>13.2f}")


if __name__ == "__main__":
    main()
