"""The model directory's llmos_model.json, read into a typed descriptor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

FORMATS = ("onnx-genai", "onnx", "tflite")
TASKS = ("text-generation", "feature-extraction")
# How prompts reach a decoder: through its chat template ("chat"), or as raw text ("completion": a
# base model, or one built with prompt_format = "completion"). The runtime never invents a template.
PROMPT_FORMATS = ("chat", "completion")


@dataclass(frozen=True)
class EmbeddingSpec:
    pooling: str = "mean"
    normalize: bool = True
    dim: int | None = None
    max_length: int = 512


@dataclass(frozen=True)
class ModelDescriptor:
    name: str
    task: str
    format: str
    quant: str
    context_length: int
    eos_token_ids: tuple[int, ...]
    chat_template: str | None
    embedding: EmbeddingSpec | None
    raw: dict[str, Any]
    prompt_format: str | None = None  # PROMPT_FORMATS for decoders; None for encoders
    bos_token_id: int | None = None  # prepended to completion prompts the tokenizer leaves without it

    @property
    def mode(self) -> str:
        """What /v1/models reports: chat, completion, or embedding."""
        return "embedding" if self.task == "feature-extraction" else str(self.prompt_format)


def _embedding(raw: Any) -> EmbeddingSpec | None:
    if not raw:
        return None
    return EmbeddingSpec(
        pooling=str(raw.get("pooling", "mean")),
        normalize=bool(raw.get("normalize", True)),
        dim=int(raw["dim"]) if raw.get("dim") else None,
        max_length=int(raw.get("max_length", 512)),
    )


def read_descriptor(model_dir: Path) -> ModelDescriptor:
    path = Path(model_dir) / "llmos_model.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path} not found: is {model_dir} a model directory from `llmos-edge build`?"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    fmt, task = raw.get("format"), raw.get("task")
    if fmt not in FORMATS or task not in TASKS:
        raise ConfigError(
            f"{path}: unsupported format/task {fmt!r}/{task!r}; formats {FORMATS}, tasks {TASKS}"
        )
    prompt_format, template = _framing(raw, Path(model_dir), task)
    return ModelDescriptor(
        name=str(raw.get("name") or Path(model_dir).name),
        task=task,
        format=fmt,
        quant=str(raw.get("quant", "fp32")),
        context_length=int(raw.get("context_length") or 2048),
        eos_token_ids=tuple(int(x) for x in raw.get("eos_token_ids") or ()),
        chat_template=template,
        embedding=_embedding(raw.get("embedding")),
        raw=raw,
        prompt_format=prompt_format,
        bos_token_id=_optional_id(raw.get("bos_token_id"), path),
    )


def _optional_id(value: Any, path: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{path}: bos_token_id must be a token id (an integer >= 0) or null")
    return value


def model_template(model_dir: Path) -> str | None:
    """The model's own chat template: tokenizer_config.json, then chat_template.jinja."""
    cfg = Path(model_dir) / "tokenizer_config.json"
    if cfg.is_file():
        try:
            tpl = json.loads(cfg.read_text()).get("chat_template")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ConfigError(f"{cfg}: invalid JSON: {exc}") from exc
        if isinstance(tpl, str) and tpl:
            return tpl
    jinja = Path(model_dir) / "chat_template.jinja"
    return jinja.read_text() if jinja.is_file() else None


def _framing(raw: dict[str, Any], model_dir: Path, task: str) -> tuple[str | None, str | None]:
    """(prompt_format, chat_template) as the descriptor says; older descriptors without the field
    get the model's own template when it has one, else completion (never a made-up template)."""
    if task != "text-generation":
        return None, None
    fmt, template = raw.get("prompt_format"), raw.get("chat_template") or None
    if template is not None and not isinstance(template, str):
        raise ConfigError(f"{model_dir}/llmos_model.json: chat_template must be a string")
    if fmt is None:
        template = template or model_template(model_dir)
        return ("chat" if template else "completion"), template
    if fmt not in PROMPT_FORMATS:
        raise ConfigError(
            f"{model_dir}/llmos_model.json: prompt_format {fmt!r} is not one of {PROMPT_FORMATS}"
        )
    if fmt == "completion":
        return fmt, None
    template = template or model_template(model_dir)
    if not template:
        raise ConfigError(
            f"{model_dir}/llmos_model.json: prompt_format is chat but there is no chat template; "
            "rebuild with the recipe's chat_template_file, or prompt_format = \"completion\""
        )
    return fmt, template


def prepare_model_dir(model_dir: Path, device_key: Path | None) -> Path:
    """Decrypt an encrypted model dir into memory/tmpfs via the bundle's crypto module (one call).

    crypto.py belongs to the bundle side; it returns the dir unchanged when nothing is encrypted.
    """
    try:
        from . import crypto  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        if (Path(model_dir) / "llmos_model.json").exists() and "encrypted" in read_descriptor(model_dir).raw:
            raise ConfigError(f"{model_dir} is encrypted but this runtime has no crypto module") from None
        return Path(model_dir)
    result: Path = crypto.prepare_model_dir(Path(model_dir), device_key)
    return result


def release_model_dir(prepared: Path, original: Path) -> None:
    """Drop a decrypted tmpfs copy when its model is unloaded (no-op for plaintext dirs)."""
    if Path(prepared) == Path(original):
        return
    from . import crypto  # type: ignore[attr-defined,unused-ignore]

    crypto.release_model_dir(Path(prepared))


def sweep_decrypted() -> None:
    """At start: remove decrypted copies that killed runtimes of this user left on tmpfs."""
    try:
        from . import crypto  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    crypto.sweep_at_start()


def weight_bytes(model_dir: Path) -> int:
    """Size of the files that end up in memory (graph + weights)."""
    exts = (".onnx", ".data", ".tflite", ".bin", ".enc")
    return sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file() and p.name.endswith(exts))
