"""onnxruntime session creation shared by the plain engines: providers in order, CPU fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import EngineOptions, pick_providers


def make_session(model_file: Path, options: EngineOptions, name: str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if options.threads > 0:
        so.intra_op_num_threads = options.threads
    providers = pick_providers(options.providers, ort.get_available_providers())
    try:
        return ort.InferenceSession(str(model_file), sess_options=so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise ConfigError(f"model {name}: onnxruntime could not load {model_file}: {exc}") from exc
