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
