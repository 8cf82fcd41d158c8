"""Tokenizer repair: the GGUF-derived tokenizer made to agree between HF and onnxruntime-genai."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmos_edge.stages.tokenizer_repair import repair_tokenizer

TEXTS = [
    "What is the capital of France?",
    "  leading spaces and Ünïcödé — 東京 🙂",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "code: def f(x):\n\treturn x**2",
]


def _break_like_gguf(d: Path) -> None:
    """As transformers' GGUF import produced it (toolchain-facts.md): mixed decoder, prepending post-proc."""
    tok = json.loads((d / "tokenizer.json").read_text())
    tok["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ],
    }
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
        ],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}},
    }
    (d / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["eos_token"] = "<|im_start|>"
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))


def _og_ids(model_dir: Path, texts: list[str]) -> list[list[int]]:
    import onnxruntime_genai as og

    tok = og.Tokenizer(og.Model(str(model_dir)))
    return [[int(i) for i in tok.encode(t)] for t in texts]


def _hf_ids(hf_dir: Path, texts: list[str]) -> list[list[int]]:
    from llmos_edge.toolchains import manager
    from llmos_edge.toolchains.contract import run_worker

    resp = run_worker(
        manager.ensure("onnx-genai", progress=False),
        "genai_worker.py",
        {"op": "hf_tokenize", "hf_dir": str(hf_dir), "texts": texts},
    )
    return [list(x) for x in resp["ids"]]


def test_repair_fixes_broken_tokenizer(tmp_path: Path, tiny_decoder_dir: Path) -> None:
    from tokenizers import Tokenizer

    d = tmp_path / "m"
    shutil.copytree(tiny_decoder_dir, d)
    _break_like_gguf(d)
    assert Tokenizer.from_file(str(d / "tokenizer.json")).encode("Hi").ids[0] == 1  # prepends <|im_start|>
    changes = repair_tokenizer(d)
    assert {"decoder", "post_processor", "eos"} <= set(changes)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert tok.encode("Hi").ids[0] != 1
    for t in TEXTS:
        assert tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False) == t
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|im_end|>" and cfg["add_bos_token"] is False
    assert repair_tokenizer(d) == {"eos": ["<|im_end|>", 2]}  # idempotent
    core = [tok.encode(t, add_special_tokens=False).ids for t in TEXTS]
    assert _og_ids(d, TEXTS) == core
    assert all(i >= 0 for ids in core for i in ids)


def test_tiny_hf_and_og_agree(tiny_llama_hf: Path, tiny_decoder_dir: Path) -> None:
    assert _hf_ids(tiny_llama_hf, TEXTS) == _og_ids(tiny_decoder_dir, TEXTS)


@pytest.mark.slow
def test_smollm2_hf_and_og_tokenize_identically(smollm2_int4_dir: Path) -> None:
    """The real SmolLM2 GGUF tokenizer after repair: transformers == onnxruntime-genai, no -1 ids."""
    from llmos_edge import cache

    prepared = [
        e.path
        for e in cache.list_entries()
        if e.stage == "prepare" and "SmolLM2" in str(e.meta.get("describe", {}).get("source"))
    ]
    assert prepared, "the SmolLM2 build leaves its prepared HF folder in the stage cache"
    hf_dir = max(prepared, key=lambda p: p.stat().st_mtime)
    og = _og_ids(smollm2_int4_dir, TEXTS)
    assert _hf_ids(hf_dir, TEXTS) == og
    assert all(i >= 0 for ids in og for i in ids)
