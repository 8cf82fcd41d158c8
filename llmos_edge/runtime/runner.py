"""One generation in-process, streamed to a callback (the `run` commands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .api import parse_text_request, require_model
from .config import RuntimeConfig
from .service import Runtime
from .textgen import GenResult


def generate_to(
    config: RuntimeConfig, model: str | None, body: dict[str, Any], write: Callable[[str], Any]
) -> GenResult:
    """Stream a chat (or completion when body has 'prompt') to `write`; returns counts and timings."""
    runtime = Runtime(config)
    try:
        mid = require_model({**body, "model": model} if model else body, runtime.model_ids())
        kind = "completion" if "prompt" in body else "chat"
        req = parse_text_request(kind, body, mid, runtime.default_max_tokens(mid))
        with runtime.text_session(req) as (pieces, result):
            for piece in pieces:
                write(piece)
        return result
    finally:
        runtime.close()
