"""Configs onnxruntime-genai's builder used to misread, built for real (issue 11).

Tiny random Gemma 3 (per-layer-type RoPE, a sliding layer) and Phi-3 (max_position_embeddings !=
original_max_position_embeddings, no rope_scaling), made with transformers in the onnx-genai toolchain:
each builds for `host` through the CLI and answers through `llmos-edge run`; the ONNX greedy tokens
equal transformers' on the same prompt; and a config the builder still cannot read exits 2 with the
architecture and the field named, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_models import TINY_FAMILIES, tiny_family_hf_dir

from llmos_edge.stages.export import build_decoder
from llmos_edge.toolchains import manager
from llmos_edge.toolchains.contract import run_worker

EVAL = "The capital of France is Paris. Edge devices run small language models. " * 4
# 20+ tokens: longer than the tiny Gemma 3's sliding window (8), so the window is exercised
PROMPT = "The capital of France is Paris. Edge devices run small language models on four cores."
FAMILIES = sorted(TINY_FAMILIES)


def _recipe(folder: Path, name: str, source: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(
        'schema_version = 1\ntask = "text-generation"\nparams_m = 0.2\ncontext_length = 256\n'
        f'evaluation_text = "{EVAL}"\n[source]\nkind = "local"\npath = "{source}"\n'
        "[quality]\nrequire_golden = false\nmax_perplexity_ratio = 1.5\n"
    )


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LLMOS_EDGE_RECIPES_PATH": str(tmp / "recipes"),
        "XDG_CONFIG_HOME": str(tmp / "config"),  # the default signing key is made here, not in ~
    }
    env.pop("LLMOS_EDGE_SIGNING_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "llmos_edge", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )


def _bundle_path(stdout: str) -> Path:
    for line in stdout.splitlines():
        if line.startswith("bundle  "):
            return Path(line[len("bundle") :].strip())
    raise AssertionError(f"no bundle line in:\n{stdout}")


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_builds_for_host_and_answers(family: str, tmp_path: Path) -> None:
    _recipe(tmp_path / "recipes", f"tiny-{family}", tiny_family_hf_dir(family))
    out = tmp_path / "out"
    # random weights: the gate rightly calls the fp32 reference untrained (ppl ~ vocab), so it is off here;
    # the export's correctness is the greedy/logits equality with transformers below
    built = _cli(tmp_path, "build", "--recipe", f"tiny-{family}", "--no-wheels", "--no-gate",
                 "--out", str(out))
    assert built.returncode == 0, built.stderr
    bundle = _bundle_path(built.stdout)
    report = json.loads((out / "build-report.json").read_text())
    assert report["model"]["quality"]["gate"] == "off (--no-gate)", report["model"]["quality"]
    assert report["model"]["architecture"] == TINY_FAMILIES[family][1], report["model"]
    chat = _cli(tmp_path, "run", str(bundle), "What is the capital of France?", "--max-tokens", "8")
    assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr
    raw = _cli(
        tmp_path, "run", str(bundle), "The capital of France is", "--raw", "--json", "--max-tokens", "8"
    )
    assert raw.returncode == 0, raw.stderr
    answer = json.loads(raw.stdout)
    assert answer["completion_tokens"] >= 1 and answer["finish_reason"] in ("length", "stop"), answer
    # a request shorter than Gemma 3's sliding window (8): the runtime's max_length is then below it
    short = _cli(tmp_path, "run", str(bundle), "Hi", "--raw", "--json", "--max-tokens", "1")
    assert short.returncode == 0, short.stderr
    assert json.loads(short.stdout)["prompt_tokens"] + 1 < 8


def _onnx_greedy(model_dir: Path, ids: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
    """og's greedy tokens and the logits each was chosen from (og computes a step's logits lazily:
    the prefill's before the first token, then token i's during generate_next_token i)."""
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + n, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    logits = [np.asarray(gen.get_output("logits"))[0, -1]]
    out: list[int] = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
        if len(out) > 1:
            logits.append(np.asarray(gen.get_output("logits"))[0, -1])
    return out, logits


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_greedy_tokens_equal_transformers(family: str, tmp_path: Path) -> None:
    """fp32 export vs transformers in the toolchain, tokens and every step's logits: a RoPE theta,
    window or scale the normalization got wrong changes them (the prompt outruns the window)."""
    import onnxruntime_genai as og

    hf = tiny_family_hf_dir(family)
    tc = manager.ensure("onnx-genai", progress=False)
    info = build_decoder(tc, hf, tmp_path / "m", name=f"tiny-{family}", quant="fp32", context_length=256)
    assert info["architecture"] == TINY_FAMILIES[family][1]
    ids = [int(i) for i in og.Tokenizer(og.Model(str(tmp_path / "m"))).encode(PROMPT)]
    assert len(ids) > 8
    onnx, onnx_logits = _onnx_greedy(tmp_path / "m", ids, 24)
    assert [int(np.argmax(x)) for x in onnx_logits] == onnx, "logits not aligned with their tokens"
    req = {"op": "hf_greedy", "hf_dir": str(hf), "ids": ids, "max_new_tokens": 24}
    ref = run_worker(tc, "genai_worker.py", req)
    assert onnx == ref["ids"], (onnx, ref["ids"])
    ref_logits = np.array(ref["logits"], dtype=np.float32)
    diff = float(np.max(np.abs(np.stack(onnx_logits) - ref_logits)))
    assert diff < 1e-3 * max(1.0, float(np.max(np.abs(ref_logits)))), diff


# (family, rope_parameters, words the error must contain): the first fails inside the builder's
# config load (KeyError from transformers), the second is refused by the normalization itself
UNREADABLE = [
    (
        "phi3",
        {"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": [1.0] * 8},
        ("Phi3ForCausalLM", "short_factor"),
    ),
    (
        "gemma3",
        {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
        },
        ("Gemma3ForCausalLM", "sliding_attention.rope_type"),
    ),
]


@pytest.mark.parametrize(("family", "rope", "words"), UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_config_the_builder_cannot_read_exits_2_naming_the_field(
    family: str, rope: dict[str, object], words: tuple[str, ...], tmp_path: Path
) -> None:
    """The user gets exit 2 with the architecture and the field, no traceback, and no output folder."""
    hf = tmp_path / f"{family}-broken"
    shutil.copytree(tiny_family_hf_dir(family), hf)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["rope_parameters"] = rope
    (hf / "config.json").write_text(json.dumps(cfg))
    _recipe(tmp_path / "recipes", "broken", hf)
    out = tmp_path / "out"
    proc = _cli(tmp_path, "build", "--recipe", "broken", "--no-wheels", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
