"""The on-device "LLM OS": model engines behind one interface and an OpenAI-compatible HTTP API.

Self-contained on purpose: only relative imports, stdlib + numpy + onnxruntime + onnxruntime_genai +
tokenizers, because this package is copied into bundles as the top-level package `llmos_runtime`.
"""

from __future__ import annotations

__version__ = "0.1.0"
