"""Repair the tokenizer transformers derives from a GGUF, so HF and onnxruntime-genai agree.

Found on SmolLM2's GGUF (toolchain-facts.md): eos is <|im_start|> while the model ends turns with
<|im_end|>; a post-processor prepends <|im_start|> to every encode; the decoder mixes SentencePiece
and ByteLevel steps, which makes onnxruntime-genai encode to -1 ids. Pure JSON edits, no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_text

END_OF_TURN = "<|im_end|>"
_BYTELEVEL = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return data


def _dump(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _is_bytelevel(tok: dict[str, Any]) -> bool:
    pre = tok.get("pre_tokenizer") or {}
    kinds = [pre.get("type")] + [p.get("type") for p in pre.get("pretokenizers", [])]
    return "ByteLevel" in kinds


def repair_tokenizer(hf_dir: Path) -> dict[str, Any]:
    """Fix tokenizer.json / tokenizer_config.json / config eos in place; return what changed."""
    tok_path = hf_dir / "tokenizer.json"
    tok = _load(tok_path)
    vocab = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab.update((tok.get("model") or {}).get("vocab") or {})
    changes: dict[str, Any] = {}
    if _is_bytelevel(tok):
        if tok.get("decoder") != _BYTELEVEL:
            tok["decoder"], changes["decoder"] = dict(_BYTELEVEL), "ByteLevel"
        if tok.get("post_processor") != _BYTELEVEL:
            tok["post_processor"], changes["post_processor"] = (
                dict(_BYTELEVEL),
                "ByteLevel (no prepended token)",
            )
        if tok.get("normalizer") is not None:
            tok["normalizer"], changes["normalizer"] = None, None
        _dump(tok_path, tok)
    eos_id = vocab.get(END_OF_TURN)
    if eos_id is not None:
        changes.update(_fix_eos(hf_dir, eos_id))
    return changes


def _fix_eos(hf_dir: Path, eos_id: int) -> dict[str, Any]:
    """End generation at <|im_end|>: tokenizer_config, special tokens map, config, generation config."""
    changes: dict[str, Any] = {"eos": [END_OF_TURN, eos_id]}
    cfg_path = hf_dir / "tokenizer_config.json"
    cfg = _load(cfg_path)
    cfg.update({"eos_token": END_OF_TURN, "pad_token": END_OF_TURN, "add_bos_token": False})
    cfg.pop("add_eos_token", None)
    _dump(cfg_path, cfg)
    stm_path = hf_dir / "special_tokens_map.json"
    stm = _load(stm_path)
    stm.update({"eos_token": END_OF_TURN, "pad_token": END_OF_TURN})
    _dump(stm_path, stm)
    for name in ("config.json", "generation_config.json"):
        path = hf_dir / name
        if path.is_file():
            data = _load(path)
            data.update({"eos_token_id": eos_id, "pad_token_id": eos_id})
            _dump(path, data)
    return changes
