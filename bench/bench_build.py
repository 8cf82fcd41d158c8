"""Build benchmark on the real SmolLM2-135M-Instruct, side by side in one run (by hand, not a test).

    .venv/bin/python bench/bench_build.py [--target rpi5] [--keep-cache DIR]

Prints: cold build time (fresh stage cache; toolchains reused), warm rebuild time (goal <= 2 s),
int4 / int8 / fp32 sizes and perplexity, against onnxruntime-genai's own builder int4 output (its
defaults, run on the same prepared HF folder) -- goal: size and perplexity no worse than the builder's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from llmos_edge import cache
from llmos_edge.build_model import build_model
from llmos_edge.errors import CheckFailed
from llmos_edge.paths import cache_root
from llmos_edge.plan import make_plan
from llmos_edge.spec import load_recipe, load_target
from llmos_edge.stages.evaluate import generate, perplexity
from llmos_edge.stages.model_dir import model_size_bytes
from llmos_edge.toolchains import manager
from llmos_edge.toolchains.contract import run_worker

PROMPT = "What is the capital of France?"


def _fresh_cache(keep: str | None) -> Path:
    real = cache_root()
    root = Path(keep or tempfile.mkdtemp(prefix="llmos-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    for name in ("toolchains", "dl"):
        if not (root / name).exists():
            os.symlink(real / name, root / name)
    os.environ["LLMOS_EDGE_CACHE"] = str(root)
    return root


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def _builder_default_int4(hf_dir: Path, out: Path) -> float:
    """onnxruntime-genai's builder with its own defaults (-p int4 -e cpu), as a user would run it."""
    tc = manager.ensure("onnx-genai")
    req = {
        "op": "export_decoder",
        "hf_dir": str(hf_dir),
        "out_dir": str(out),
        "precision": "int4",
        "execution_provider": "cpu",
        "cache_dir": str(out / ".cache"),
        "extra_options": {},
    }
    return _timed(lambda: run_worker(tc, "genai_worker.py", req))[1]


def _build_even_if_gate_fails(plan: Any) -> tuple[Path, float, str]:
    """Build; when the quality gate refuses, still measure the quantized model it scored."""
    t0 = time.monotonic()
    try:
        return build_model(plan, progress=False).model_dir, time.monotonic() - t0, "pass"
    except CheckFailed:
        secs = time.monotonic() - t0
        entries = [
            e
            for e in cache.list_entries()
            if e.stage == "quantize" and e.meta.get("describe", {}).get("quant") == plan.quant
        ]
        return max(entries, key=lambda e: e.created).path, secs, "FAIL"


def _row(name: str, d: Path, text: str, ref_ppl: float, secs: float | None) -> dict[str, Any]:
    ppl, _ = perplexity(d, text)
    answer, stopped, _ = generate(d, PROMPT, max_tokens=48)
    return {
        "variant": name,
        "MB": model_size_bytes(d) / 1e6,
        "ppl": ppl,
        "ratio": ppl / ref_ppl,
        "paris": "Paris" in answer,
        "stops": stopped,
        "build_s": secs,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="rpi5")
    ap.add_argument(
        "--keep-cache", default=None, help="stage cache folder to use (default: a fresh temp one)"
    )
    ap.add_argument("--warm-runs", type=int, default=5)
    args = ap.parse_args()
    root = _fresh_cache(args.keep_cache)
    recipe = load_recipe("smollm2-135m-instruct")
    target = load_target(args.target)
    plans = {q: make_plan(target, recipe, quant=q) for q in ("int4", "int8", "fp32")}
    print(f"stage cache: {root}")
    cold, cold_s = _timed(lambda: build_model(plans["int4"], progress=False))
    warm_s = [_timed(lambda: build_model(plans["int4"], progress=False))[1] for _ in range(args.warm_runs)]
    int8_dir, int8_s, int8_gate = _build_even_if_gate_fails(plans["int8"])
    text = recipe.evaluation_text
    ref_dir = cold.reference_dir or cold.model_dir
    ref_ppl, _ = perplexity(ref_dir, text)
    prepared = next(p for p in (root / "stages" / "prepare").iterdir() if not p.name.startswith("."))
    gb_dir = root / "bench-builder-default-int4"
    gb_s = _builder_default_int4(prepared, gb_dir) if not (gb_dir / "model.onnx").exists() else None
    from llmos_edge.stages import model_dir as md

    md.copy_tokenizer(prepared, gb_dir)
    md.write_descriptor(
        gb_dir,
        name="builder-default",
        task="text-generation",
        fmt="onnx-genai",
        quant="int4",
        context_length=2048,
    )
    rows = [
        _row("fp32 (reference)", ref_dir, text, ref_ppl, None),
        _row("llmos int4 (shipped)", cold.model_dir, text, ref_ppl, None),
        _row(f"llmos int8 (gate {int8_gate})", int8_dir, text, ref_ppl, int8_s),
        _row("genai builder int4 (defaults)", gb_dir, text, ref_ppl, gb_s),
    ]
    print(f"\ncold build (int4, fresh stage cache, toolchain reused): {cold_s:.1f} s")
    print(f"warm rebuild: median {statistics.median(warm_s):.3f} s over {len(warm_s)} runs (goal <= 2 s)")
    print(f"changed --quant int8 (export reused): {int8_s:.1f} s\n")
    print(f"{'variant':<32}{'MB':>8}{'ppl':>9}{'/fp32':>8}{'Paris':>7}{'stops':>7}")
    for r in rows:
        print(
            f"{r['variant']:<32}{r['MB']:>8.1f}{r['ppl']:>9.3f}{r['ratio']:>8.3f}{r['paris']!s:>7}{r['stops']!s:>7}"
        )
    ours, theirs = rows[1], rows[3]
    print(
        f"\nllmos int4 vs builder int4: size x{ours['MB'] / theirs['MB']:.3f}, "
        f"ppl x{ours['ppl'] / theirs['ppl']:.3f}"
    )
    print("stage seconds (cold):", {s["stage"]: s["seconds"] for s in cold.report["stages"]})


if __name__ == "__main__":
    main()
