"""Engine registry keyed by (format, task); engines import their heavy libraries lazily."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..descriptor import ModelDescriptor
from ..errors import ConfigError
from .base import EmbedEngine, EngineOptions, GenParams, TextEngine

# (format, task) -> "module:factory" relative to this package; a tflite engine adds one line here.
REGISTRY: dict[tuple[str, str], str] = {
    ("onnx-genai", "text-generation"): ".genai:GenaiEngine",
    ("onnx", "text-generation"): ".ort_decoder:OrtDecoderEngine",
    ("onnx", "feature-extraction"): ".ort_encoder:OrtEncoderEngine",
    ("tflite", "text-generation"): "..engine_tflite:TFLiteDecoderEngine",
    ("tflite", "feature-extraction"): "..engine_tflite:TFLiteEncoderEngine",
}


def create_engine(model_dir: Path, descriptor: ModelDescriptor, options: EngineOptions) -> Any:
    key = (descriptor.format, descriptor.task)
    if key not in REGISTRY:
        raise ConfigError(
            f"model {descriptor.name}: no engine for format {key[0]!r} + task {key[1]!r}; "
            f"supported: {sorted(REGISTRY)}"
        )
    module_name, attr = REGISTRY[key].split(":")
    module = importlib.import_module(module_name, __name__)
    return getattr(module, attr)(model_dir, descriptor, options)


__all__ = ["REGISTRY", "EmbedEngine", "EngineOptions", "GenParams", "TextEngine", "create_engine"]
