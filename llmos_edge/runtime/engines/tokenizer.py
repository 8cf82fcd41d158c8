"""HF `tokenizers` loading shared by the plain onnxruntime engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def load_tokenizer(model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    path = model_dir / "tokenizer.json"
    if not path.exists():
        raise ConfigError(f"{model_dir}: tokenizer.json missing; rebuild the model dir")
    return Tokenizer.from_file(str(path))


def encode(tokenizer: Any, text: str, add_special_tokens: bool, bos: int | None) -> list[int]:
    """Token ids; a plain-text prompt gets the model's BOS (descriptor bos_token_id) when the
    tokenizer's post-processor does not add it (add_bos_token lives in tokenizer_config.json)."""
    ids: list[int] = list(tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)
    if add_special_tokens and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


def special_tokens(model_dir: Path) -> dict[str, str]:
    """bos/eos strings for chat templates that reference them."""
    cfg = model_dir / "tokenizer_config.json"
    raw: dict[str, Any] = json.loads(cfg.read_text()) if cfg.exists() else {}
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        val = raw.get(key)
        if isinstance(val, dict):
            val = val.get("content")
        if isinstance(val, str):
            out[key] = val
    return out
