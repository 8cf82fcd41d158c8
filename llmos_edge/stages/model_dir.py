"""Finish a model directory as docs/design.md specifies: tokenizer files + llmos_model.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import UserError
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


def framing(
    model_dir: Path, prompt_format: str = "auto", template: str | None = None
) -> tuple[str, str | None]:
    """(prompt_format, chat_template) the descriptor records: the recipe's template, else the model's
    own; "auto" is chat with a template and completion without one; a template is never invented."""
    if prompt_format == "completion":
        return "completion", None
    tpl = template or chat_template(model_dir)
    if prompt_format == "chat" and not tpl:
        raise UserError(
            f"the recipe asks for prompt_format = \"chat\" but {model_dir.name} has no chat template",
            hints=[
                "give the template: chat_template_file = \"template.jinja\" (relative to the recipe)",
                "or build it as a base model: prompt_format = \"completion\"",
            ],
        )
    return ("chat", tpl) if tpl else ("completion", None)


def _token_id(tok: dict[str, Any], token: Any) -> int | None:
    token = token.get("content") if isinstance(token, dict) else token
    if not isinstance(token, str):
        return None
    for t in tok.get("added_tokens") or []:
        if isinstance(t, dict) and t.get("content") == token and isinstance(t.get("id"), int):
            return int(t["id"])
    vocab = (tok.get("model") or {}).get("vocab")
    found = vocab.get(token) if isinstance(vocab, dict) else None
    return found if isinstance(found, int) else None


def _special_id(piece: Any, specials: dict[str, Any]) -> int | None:
    name = piece.get("SpecialToken", {}).get("id") if isinstance(piece, dict) else None
    ids = (specials.get(name) or {}).get("ids") if isinstance(name, str) else None
    return int(ids[0]) if isinstance(ids, list) and len(ids) == 1 else None


def _template_ends(tok: dict[str, Any]) -> tuple[int | None, int | None]:
    """BOS/EOS a TemplateProcessing post-processor (alone or in a Sequence) puts around one text."""
    post = tok.get("post_processor") or {}
    procs = (post.get("processors") or []) if post.get("type") == "Sequence" else [post]
    for proc in procs:
        if not isinstance(proc, dict) or proc.get("type") != "TemplateProcessing":
            continue
        single, specials = proc.get("single") or [], proc.get("special_tokens") or {}
        bos = _special_id(single[0], specials) if single else None
        eos = _special_id(single[-1], specials) if len(single) > 1 else None
        return bos, eos
    return None, None


def special_framing(model_dir: Path) -> tuple[int | None, int | None]:
    """(BOS to put before, EOS to put after) a plain text, as the model's tokenizer does it:
    tokenizer_config.json add_bos_token / add_eos_token (what the GGUF's tokenizer.ggml.add_bos_token
    becomes in the prepared folder) win; without them the tokenizer.json post-processor decides."""
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    bos, eos = _template_ends(tok)
    if isinstance(cfg.get("add_bos_token"), bool):
        bos = _token_id(tok, cfg.get("bos_token")) if cfg["add_bos_token"] else None
    if isinstance(cfg.get("add_eos_token"), bool):
        eos = _token_id(tok, cfg.get("eos_token")) if cfg["add_eos_token"] else None
    return bos, eos


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
    prompt_format: str = "auto",
    template: str | None = None,
) -> dict[str, Any]:
    """llmos_model.json; decoders record how prompts are framed (runtime/descriptor.py reads it)."""
    fmt_, tpl = framing(model_dir, prompt_format, template) if task == "text-generation" else (None, None)
    desc: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "task": task,
        "format": fmt,
        "quant": quant,
        "context_length": context_length,
        "eos_token_ids": eos_ids(model_dir) if task == "text-generation" else [],
        "prompt_format": fmt_,
        "chat_template": tpl,
        # the BOS a plain-text (completion) prompt starts with, by the tokenizer's own convention
        "bos_token_id": special_framing(model_dir)[0] if task == "text-generation" else None,
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
