"""Finish a model directory as docs/design.md specifies: tokenizer files + llmos_model.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_text

DESCRIPTOR = "llmos_model.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Ship the (repaired) tokenizer of `src`, overriding whatever a converter wrote."""
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def chat_template(model_dir: Path) -> str | None:
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    tmpl = cfg.get("chat_template")
    if isinstance(tmpl, str):
        return tmpl
    jinja = model_dir / "chat_template.jinja"
    return jinja.read_text() if jinja.is_file() else None


def eos_ids(model_dir: Path) -> list[int]:
    """The ids that end generation: tokenizer_config's eos_token looked up in tokenizer.json."""
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    eos = cfg.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    ids = [t["id"] for t in tok.get("added_tokens", []) if t["content"] == eos]
    return ids


def write_descriptor(
    model_dir: Path,
    *,
    name: str,
    task: str,
    fmt: str,
    quant: str,
    context_length: int,
    embedding: dict[str, Any] | None = None,
) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "task": task,
        "format": fmt,
        "quant": quant,
        "context_length": context_length,
        "eos_token_ids": eos_ids(model_dir) if task == "text-generation" else [],
        "chat_template": chat_template(model_dir) if task == "text-generation" else None,
        "embedding": embedding,
    }
    atomic_write_text(model_dir / DESCRIPTOR, json.dumps(desc, indent=2) + "\n")
    return desc


def patch_genai_config(model_dir: Path, *, eos: list[int], context_length: int) -> None:
    """End at end-of-turn and cap the context at what the plan promised."""
    path = model_dir / "genai_config.json"
    cfg = json.loads(path.read_text())
    model = cfg["model"]
    if eos:
        model["eos_token_id"] = eos[0] if len(eos) == 1 else eos
        model["pad_token_id"] = eos[0]
    model["context_length"] = min(int(model.get("context_length", context_length)), context_length)
    cfg.setdefault("search", {})["max_length"] = model["context_length"]
    atomic_write_text(path, json.dumps(cfg, indent=4) + "\n")


def model_size_bytes(model_dir: Path) -> int:
    """Weights on disk (model.onnx + external data), what the size goals talk about."""
    return sum(p.stat().st_size for p in model_dir.iterdir() if p.name.startswith("model.onnx"))


def embedding_info(hf_dir: Path, max_length: int) -> dict[str, Any]:
    """Pooling/normalize from sentence-transformers files (mean + normalize when absent)."""
    pooling, normalize = "mean", True
    pool_cfg = hf_dir / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        cfg = json.loads(pool_cfg.read_text())
        modes = {
            "pooling_mode_cls_token": "cls",
            "pooling_mode_mean_tokens": "mean",
            "pooling_mode_max_tokens": "max",
        }
        pooling = next((v for k, v in modes.items() if cfg.get(k)), "mean")
    modules = hf_dir / "modules.json"
    if modules.is_file():
        normalize = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    dim = json.loads((hf_dir / "config.json").read_text()).get("hidden_size")
    return {"pooling": pooling, "normalize": normalize, "dim": dim, "max_length": max_length}
