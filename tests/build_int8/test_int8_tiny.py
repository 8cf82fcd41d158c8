"""int8 decoders on the tiny real Llama: the tied embedding reads the int8 lm_head, the runtime loads
the result, and it scores like its fp32 reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.build_model import build_model
from llmos_edge.plan import make_plan
from llmos_edge.runtime.config import config_for_model_dirs
from llmos_edge.runtime.runner import generate_to
from llmos_edge.spec import load_target
from llmos_edge.spec.models import Recipe
from llmos_edge.stages import evaluate as ev
from llmos_edge.stages.export import INT8_BLOCK_SIZE, build_decoder
from llmos_edge.toolchains import manager
from llmos_edge.toolchains.contract import run_worker

EVAL = "The capital of France is Paris. Edge devices run small language models. " * 4
_FP32 = 1  # onnx TensorProto.FLOAT


def _plan(hf: Path, quant: str) -> Any:
    recipe = Recipe.model_validate(
        {
            "schema_version": 1,
            "name": "tiny-llama",
            "task": "text-generation",
            "source": {"kind": "local", "path": str(hf)},
            "context_length": 256,
            "evaluation_text": EVAL,
            "quality": {"max_perplexity_ratio": 1.05, "require_golden": False},
            "golden": [
                {"prompt": "What is the capital of France?", "expect_contains": ["Paris"], "max_tokens": 4}
            ],
        }
    )
    q: Any = quant
    return make_plan(load_target("host"), recipe, quant=q)


def _hits(report: dict[str, Any]) -> dict[str, bool | None]:
    return {s["stage"]: s["cache_hit"] for s in report["stages"]}


def test_int8_ties_embedding_and_scores_like_fp32(
    private_cache: Path, tiny_llama_hf: Path, read_graph: Callable[[Path], dict[str, Any]]
) -> None:
    build = build_model(_plan(tiny_llama_hf, "int8"), progress=False)
    assert json.loads((build.model_dir / "llmos_model.json").read_text())["quant"] == "int8"
    info = read_graph(build.model_dir)
    gbq = info["nodes"]["/model/embed_tokens/GatherBlockQuantized"]
    lm_head = next(n for name, n in info["nodes"].items() if name.startswith("/lm_head/"))
    assert lm_head["op"] == "MatMulNBits" and lm_head["bits"] == 8
    assert lm_head["block_size"] == gbq["block_size"] == INT8_BLOCK_SIZE and gbq["bits"] == 8
    reshape = info["nodes"]["/model/embed_tokens/Reshape"]  # the lm_head's int8 rows feed the lookup
    assert reshape["inputs"][0] == lm_head["inputs"][1] and gbq["inputs"][2] == lm_head["inputs"][2]
    assert "model.embed_tokens.weight" not in info["initializers"]  # no fp32 table left
    tables = info["initializers"].items()
    fp32_tables = [n for n, (dims, t) in tables if t == _FP32 and sorted(dims) == [64, 512]]
    assert not fp32_tables
    sizes = build.report["sizes"]
    # hidden 64 pads to one 128-block, so int8 is ~0.62 of fp32 here; the fp32 table kept would be ~0.85
    assert sizes["model_bytes"] < sizes["reference_bytes"] * 0.7
    q = build.report["quality"]
    assert q["passed"] and abs(q["perplexity_ratio"] - 1.0) < 0.02, q
    # the same text scored directly: int8 and fp32 agree token by token on average
    assert build.reference_dir is not None
    nll8, n8 = ev.decoder_nll(build.model_dir, ev.eval_ids(build.model_dir, EVAL))
    nll32, n32 = ev.decoder_nll(build.reference_dir, ev.eval_ids(build.reference_dir, EVAL))
    assert n8 == n32 > 20 and abs(nll8 - nll32) / n32 < 0.02 and nll8 != nll32


def test_int8_model_dir_serves_in_the_runtime(private_cache: Path, tiny_llama_hf: Path) -> None:
    build = build_model(_plan(tiny_llama_hf, "int8"), progress=False)
    pieces: list[str] = []
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 6}
    config = config_for_model_dirs([build.model_dir])
    result = generate_to(config, None, {**body, "temperature": 0}, pieces.append)
    assert result.completion_tokens >= 1 and result.finish_reason in ("stop", "length")
    assert "".join(pieces) or result.finish_reason == "stop"


def test_changed_quant_to_int8_reruns_only_quantize_and_evaluate(
    private_cache: Path, tiny_llama_hf: Path
) -> None:
    int4 = build_model(_plan(tiny_llama_hf, "int4"), progress=False)
    int8 = build_model(_plan(tiny_llama_hf, "int8"), progress=False)
    assert _hits(int8.report) == {"fetch": None, "export": True, "quantize": False, "evaluate": False}
    assert int8.model_dir != int4.model_dir and int8.reference_dir == int4.reference_dir
    warm = build_model(_plan(tiny_llama_hf, "int8"), progress=False)
    assert set(_hits(warm.report).values()) <= {True, None} and warm.model_dir == int8.model_dir


def test_untied_model_keeps_its_own_embedding(
    tmp_path: Path, read_graph: Callable[[Path], dict[str, Any]]
) -> None:
    """Only a tied lm_head may feed the embedding: an untied Llama keeps the builder's Gather."""
    import fixtures_models

    tc = manager.ensure("onnx-genai", progress=False)
    hf = tmp_path / "untied-hf"
    config = {**fixtures_models.TINY_LLAMA, "tie_word_embeddings": False}
    run_worker(tc, "genai_worker.py", {"op": "tiny_llama", "out_dir": str(hf), "config": config})
    fixtures_models.write_tiny_bpe(hf)
    out = tmp_path / "int8"
    out.mkdir()
    info = build_decoder(tc, hf, out, name="untied", quant="int8", context_length=256)
    assert info["tied_int8_embedding"] is None
    graph = read_graph(out)
    assert graph["nodes"]["/model/embed_tokens/Gather"]["op"] == "Gather"
    assert "/model/embed_tokens/GatherBlockQuantized" not in graph["nodes"]
    answer, _, n = ev.generate(out, "What is the capital of France?", max_tokens=4)
    assert n >= 1 and isinstance(answer, str)


@pytest.mark.parametrize("quant", ["int4", "fp32"])
def test_other_precisions_are_not_rewritten(quant: str) -> None:
    """The int8 rewrite is asked for only by int8 (int4 ties natively, fp32 stays float)."""
    from llmos_edge.stages.export import builder_options

    assert not any(k.startswith("llmos_") for k in builder_options(quant, 32, 4))
    assert builder_options("int8", 32, 4)["block_size"] == INT8_BLOCK_SIZE
