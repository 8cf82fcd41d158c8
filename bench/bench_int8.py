"""int8 decoder benchmark on the real SmolLM2-135M-Instruct, side by side in one run (by hand).

    .venv/bin/python bench/bench_int8.py [--target rpi4] [--tokens 64]

Rows: fp32 reference, onnxruntime-genai's builder int8 as it comes (block 32, fp32 embedding kept),
the shipped llmos int8 (block 128, embedding read from the int8 lm_head), llmos int4. Columns: size,
perplexity and ratio to fp32, answer to the golden prompt (Paris? end-of-turn?), decode tok/s
(median of 3, greedy, onnxruntime-genai's default threads). Uses the normal stage cache
(prepare/export reused).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from llmos_edge.build_model import build_model
from llmos_edge.plan import make_plan
from llmos_edge.spec import load_recipe, load_target
from llmos_edge.stages import model_dir as md
from llmos_edge.stages.evaluate import generate, perplexity, render_chat
from llmos_edge.toolchains import manager
from llmos_edge.toolchains.contract import run_worker

PROMPT = "What is the capital of France?"


def _builder_int8(hf_dir: Path, out: Path) -> Path:
    """The builder's own int8 (-p int8 -e cpu, block 32, accuracy_level 4), no llmos post-pass."""
    req = {
        "op": "export_decoder",
        "hf_dir": str(hf_dir),
        "out_dir": str(out),
        "precision": "int8",
        "execution_provider": "cpu",
        "cache_dir": str(out / ".cache"),
        "extra_options": {"block_size": 32, "accuracy_level": 4},
    }
    run_worker(manager.ensure("onnx-genai", progress=False), "genai_worker.py", req)
    md.copy_tokenizer(hf_dir, out)
    md.patch_genai_config(out, eos=md.eos_ids(out), context_length=2048)
    md.write_descriptor(
        out, name="b", task="text-generation", fmt="onnx-genai", quant="int8", context_length=2048
    )
    return out


def decode_tok_s(model_dir: Path, tokens: int) -> float:
    """Greedy decode rate after the prompt (eos ignored: a fixed number of tokens)."""
    import json

    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    tok = og.Tokenizer(model)
    desc = json.loads((model_dir / md.DESCRIPTOR).read_text())
    ids = tok.encode(render_chat(desc["chat_template"], PROMPT, None))
    rates = []
    for _ in range(3):
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + tokens, min_length=len(ids) + tokens)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        gen.generate_next_token()
        t0, n = time.perf_counter(), 0
        while not gen.is_done():
            gen.generate_next_token()
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def _row(name: str, d: Path, text: str, ref_ppl: float | None, args: Any) -> dict[str, Any]:
    ppl, _ = perplexity(d, text)
    answer, stopped, _ = generate(d, PROMPT, max_tokens=48)
    return {
        "variant": name,
        "MB": md.model_size_bytes(d) / 1e6,
        "ppl": ppl,
        "ratio": ppl / (ref_ppl or ppl),
        "paris": "Paris" in answer,
        "stops": stopped,
        "tok_s": decode_tok_s(d, args.tokens),
        "answer": answer[:40],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="rpi4")
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    recipe, target = load_recipe("smollm2-135m-instruct"), load_target(args.target)
    builds = {}
    for q in ("int8", "int4"):
        t0 = time.monotonic()
        builds[q] = build_model(make_plan(target, recipe, quant=q), progress=False)
        print(f"llmos {q}: {time.monotonic() - t0:.1f} s (stage cache as found)", flush=True)
    ref_dir = builds["int8"].reference_dir
    assert ref_dir is not None
    prepared = next(p for p in (Path(ref_dir).parents[1] / "prepare").iterdir() if not p.name.startswith("."))
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        t0 = time.monotonic()
        plain = _builder_int8(prepared, Path(tmp) / "builder-int8")
        print(f"builder int8 (plain): {time.monotonic() - t0:.1f} s", flush=True)
        text = recipe.evaluation_text
        ref = _row("fp32 (reference)", ref_dir, text, None, args)
        rows = [
            ref,
            _row("genai builder int8 (b32, fp32 emb)", plain, text, ref["ppl"], args),
            _row("llmos int8 (shipped)", builds["int8"].model_dir, text, ref["ppl"], args),
            _row("llmos int4 (shipped)", builds["int4"].model_dir, text, ref["ppl"], args),
        ]
    print(f"\n{'variant':<36}{'MB':>8}{'ppl':>9}{'/fp32':>8}{'Paris':>7}{'stops':>7}{'tok/s':>8}  answer")
    for r in rows:
        print(
            f"{r['variant']:<36}{r['MB']:>8.1f}{r['ppl']:>9.3f}{r['ratio']:>8.3f}{r['paris']!s:>7}"
            f"{r['stops']!s:>7}{r['tok_s']:>8.1f}  {r['answer']!r}"
        )
    ours, base, ref = rows[2], rows[1], rows[0]
    print(
        f"\nllmos int8 vs builder int8: size x{ours['MB'] / base['MB']:.3f}, "
        f"decode x{ours['tok_s'] / base['tok_s']:.3f}; "
        f"vs fp32: size x{ours['MB'] / ref['MB']:.3f}, decode x{ours['tok_s'] / ref['tok_s']:.3f}"
    )


if __name__ == "__main__":
    main()
