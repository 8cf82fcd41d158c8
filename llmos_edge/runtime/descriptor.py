"""The model directory's llmos_model.json, read into a typed descriptor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

FORMATS = ("onnx-genai", "onnx", "tflite")
TASKS = ("text-generation", "feature-extraction")


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
    fmt, task = raw.get("format"), raw.get("task")
    if fmt not in FORMATS or task not in TASKS:
        raise ConfigError(
            f"{path}: unsupported format/task {fmt!r}/{task!r}; formats {FORMATS}, tasks {TASKS}"
        )
    return ModelDescriptor(
        name=str(raw.get("name") or Path(model_dir).name),
        task=task,
        format=fmt,
        quant=str(raw.get("quant", "fp32")),
        context_length=int(raw.get("context_length") or 2048),
        eos_token_ids=tuple(int(x) for x in raw.get("eos_token_ids") or ()),
        chat_template=raw.get("chat_template") or None,
        embedding=_embedding(raw.get("embedding")),
        raw=raw,
    )


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
