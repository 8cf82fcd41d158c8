"""Runtime speed vs onnxruntime-genai's own generator (and llama.cpp when installed), side by side.

Each contestant runs in its own process (clean peak RSS), in interleaved cycles so machine noise hits
all of them alike. Greedy decoding of the same chat prompt on the same weights: the same tokens.

  .venv/bin/python bench/bench_runtime.py --model-dir MODEL_DIR [--gguf Q4_0.gguf] [--cycles 3]

MODEL_DIR: an onnx-genai int4 model dir (llmos_model.json); default: the SmolLM2 int4 test fixture.
Goals (issue 3): runtime decode tokens/s >= 1.0x onnxruntime-genai; peak RSS <= 2x model file size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPT = "Write a long story about a dragon who learns to bake bread. Use many details."


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chat_ids(model_dir: Path) -> list[int]:
    """Chat prompt ids without loading a second model (tokenizers + the same template renderer)."""
    from tokenizers import Tokenizer

    from llmos_edge.runtime.chat import make_renderer
    from llmos_edge.runtime.descriptor import read_descriptor

    desc = read_descriptor(model_dir)
    text = make_renderer(desc.name, desc.chat_template, {})([{"role": "user", "content": PROMPT}])
    ids: list[int] = (
        Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    )
    return ids


def _imports_baseline_mb() -> float:
    """Peak RSS after the heavy imports, before any model: the interpreter's own share."""
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxruntime_genai  # noqa: F401
    import tokenizers  # noqa: F401

    return _peak_rss_mb()


def worker_og(model_dir: Path, max_tokens: int, runs: int) -> list[tuple[float, float, int]]:
    """onnxruntime-genai's own loop: append_tokens + generate_next_token, nothing else."""
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    ids = _chat_ids(model_dir)
    out = []
    for _ in range(runs + 1):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
        t0 = time.perf_counter()
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        first, n = 0.0, 0
        while not gen.is_done():
            gen.generate_next_token()
            gen.get_next_tokens()
            n += 1
            first = first or time.perf_counter()
        out.append((first - t0, time.perf_counter() - first, n))
        del gen
    return out[1:]  # first run is warm-up


def worker_runtime(model_dir: Path, max_tokens: int, runs: int) -> list[tuple[float, float, int]]:
    """The runtime's library path: engine + detokenization + stop handling (what the server streams)."""
    from llmos_edge.runtime.api import parse_text_request
    from llmos_edge.runtime.config import config_for_model_dirs
    from llmos_edge.runtime.service import Runtime

    runtime = Runtime(config_for_model_dirs([model_dir]))
    mid = runtime.model_ids()[0]
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "temperature": 0}
    out = []
    for _ in range(runs + 1):
        req = parse_text_request("chat", body, mid, max_tokens)
        with runtime.text_session(req) as (pieces, r):
            for _piece in pieces:
                pass
        ft = r.first_token_s or 0.0
        out.append((ft, (r.ended or 0) - r.started - ft, r.completion_tokens + (r.finish_reason == "stop")))
    runtime.close()
    return out[1:]


def worker_http(model_dir: Path, max_tokens: int, runs: int) -> list[tuple[float, float, int]]:
    """The full server: HTTP + SSE streaming, client in the same process over loopback."""
    from llmos_edge.runtime.client import stream_chat
    from llmos_edge.runtime.config import config_for_model_dirs
    from llmos_edge.runtime.server import RunningServer

    config = config_for_model_dirs([model_dir], port=0)
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "temperature": 0}
    out = []
    with RunningServer(config) as srv:
        for _ in range(runs + 1):
            o = stream_chat(srv.url, body)
            ft = o.first_token_s or 0.0
            out.append((ft, o.total_s - ft, o.completion_tokens + (o.finish_reason == "stop")))
    return out[1:]


def worker_llamacpp(gguf: Path, max_tokens: int, runs: int) -> list[tuple[float, float, int]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=2, verbose=False)
    out = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        first, n = 0.0, 0
        for _chunk in llm.create_chat_completion(
            [{"role": "user", "content": PROMPT}], max_tokens=max_tokens, temperature=0, stream=True
        ):
            n += 1
            first = first or time.perf_counter()
        out.append((first - t0, time.perf_counter() - first, n))
    return out[1:]


def make_q4_0(src: Path, dst: Path) -> Path:
    """Requantize a GGUF to Q4_0 with llama.cpp's own quantizer (the shipped SmolLM2 GGUF is Q4_1)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed with {rc}")
    return dst


WORKERS = {
    "onnxruntime-genai": worker_og,
    "runtime (library)": worker_runtime,
    "runtime (HTTP+SSE)": worker_http,
}


def run_worker(name: str, target: Path, max_tokens: int, runs: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--model-dir",
        str(target),
        "--max-tokens",
        str(max_tokens),
        "--runs",
        str(runs),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def weight_mb(model_dir: Path) -> float:
    return (
        sum(f.stat().st_size for f in model_dir.iterdir() if f.name.endswith((".onnx", ".data", ".gguf")))
        / 2**20
    )


def _cycle_tps(item: dict[str, Any]) -> float | None:
    vals = [(s[2] - 1) / s[1] for s in item.get("samples", []) if s[1] > 0 and s[2] > 1]
    return statistics.median(vals) if vals else None


def paired_ratios(results: dict[str, list[dict[str, Any]]]) -> None:
    """Per-cycle ratio to onnxruntime-genai (same cycle = same machine load), then the median."""
    base = [_cycle_tps(it) for it in results.get("onnxruntime-genai", [])]
    for name, items in results.items():
        if name == "onnxruntime-genai":
            continue
        ratios = [t / b for t, b in zip(map(_cycle_tps, items), base, strict=False) if t and b]
        if ratios:
            print(
                f"{name:22s} paired decode ratio vs og: median {statistics.median(ratios):.2f}x "
                f"(cycles: {', '.join(f'{r:.2f}' for r in ratios)})"
            )


def report(results: dict[str, list[dict[str, Any]]], model_mb: float) -> None:
    rows: dict[str, tuple[float, float, float, float, float] | None] = {}
    for name, items in results.items():
        samples = [s for it in items if "samples" in it for s in it["samples"]]
        if not samples:
            rows[name] = None
            print(f"{name:22s} FAILED: {[it.get('error') for it in items]}")
            continue
        ftl = statistics.median(s[0] for s in samples) * 1000
        tps = statistics.median((s[2] - 1) / s[1] for s in samples if s[1] > 0 and s[2] > 1)
        rss = max(it["peak_rss_mb"] for it in items if "peak_rss_mb" in it)
        base = min(it["base_rss_mb"] for it in items if "base_rss_mb" in it)
        tokens = statistics.median(s[2] for s in samples)
        rows[name] = (ftl, tps, rss, tokens, rss - base)
    base = rows.get("onnxruntime-genai")
    print(f"\nmodel weights: {model_mb:.1f} MB; medians over {len(next(iter(results.values())))} cycles")
    print(
        f"{'contestant':22s} {'first-token ms':>15s} {'decode tok/s':>13s} {'vs og':>7s} {'tokens':>7s} "
        f"{'peak RSS MB':>12s} {'RSS/model':>10s} {'(RSS-imports)/model':>20s}"
    )
    for name, row in rows.items():
        if row is None:
            continue
        ftl, tps, rss, tokens, own = row
        ratio = f"{tps / base[1]:.2f}x" if base else "-"
        print(
            f"{name:22s} {ftl:15.1f} {tps:13.1f} {ratio:>7s} {tokens:7.0f} {rss:12.0f} {rss / model_mb:9.2f}x"
            f" {own / model_mb:19.2f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--gguf", type=Path, help="Q4_0 GGUF of the same weights for llama.cpp")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=2, help="timed runs per worker process (after one warm-up)")
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--worker")
    ap.add_argument(
        "--make-q4-0",
        nargs=2,
        type=Path,
        metavar=("SRC_GGUF", "OUT_GGUF"),
        help="requantize a GGUF to Q4_0 for the llama.cpp contestant, then exit",
    )
    args = ap.parse_args()
    if args.make_q4_0:
        print(make_q4_0(*args.make_q4_0))
        return
    if args.worker:
        fn = {**WORKERS, "llama.cpp": worker_llamacpp}[args.worker]
        base = _imports_baseline_mb()
        samples = fn(args.model_dir, args.max_tokens, args.runs)
        print(json.dumps({"samples": samples, "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base}))
        return
    model_dir = args.model_dir
    if model_dir is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import fixtures_models

        model_dir = fixtures_models.smollm2_int4_dir()
    contestants: dict[str, Path] = {name: model_dir for name in WORKERS}
    try:
        import llama_cpp  # noqa: F401

        if args.gguf:
            contestants["llama.cpp"] = args.gguf
        else:
            print("llama.cpp: skipped (pass --gguf Q4_0.gguf)")
    except ImportError:
        print("llama.cpp: skipped (llama-cpp-python not installed; it builds from sdist in ~12 min here)")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in contestants}
    for cycle in range(args.cycles):
        for name, target in contestants.items():
            results[name].append(run_worker(name, target, args.max_tokens, args.runs))
            print(f"cycle {cycle + 1}/{args.cycles} {name}: done", flush=True)
    report(results, weight_mb(model_dir))
    paired_ratios(results)


if __name__ == "__main__":
    main()
