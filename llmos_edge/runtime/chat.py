"""Chat templates: render the model's own Jinja template, never a made-up one.

onnxruntime-genai renders natively; the other engines render with jinja2, which bundles carry in their
offline wheels. A runtime installed without it refuses chat requests with the fix (completions still work).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import ApiError

Messages = list[dict[str, Any]]
Renderer = Callable[[Messages], str]


def render_with_jinja(template: str, messages: Messages, special: dict[str, str]) -> str | None:
    """Render in a sandbox when jinja2 is installed; None when it is not."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None

    def raise_exception(msg: str) -> None:
        raise ValueError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, **special)


def completion_only(model: str) -> ApiError:
    """The answer to a chat request for a model without a chat template (one message, one place)."""
    return ApiError(
        400,
        f"model {model!r} is a completion model (no chat template: a base model, or built with "
        "prompt_format = \"completion\"); send a plain prompt to /v1/completions "
        "(`llmos-edge run --raw`), or rebuild with a chat template (recipe chat_template_file)",
        param="messages",
        code="chat_not_supported",
    )


def make_renderer(
    model: str,
    template: str | None,
    special: dict[str, str],
    native: Callable[[str, str], str] | None = None,
) -> Renderer:
    """Pick the renderer once: native (onnxruntime-genai) > jinja2; no template -> chat is refused."""

    def render(messages: Messages) -> str:
        if template is None:
            raise completion_only(model)
        if native is not None:
            return native(json.dumps(messages), template)
        out = render_with_jinja(template, messages, special)
        if out is None:
            raise ApiError(
                503,
                f"model {model!r}: rendering its chat template needs jinja2, which this runtime lacks; "
                "install jinja2 beside the runtime, or send plain prompts to /v1/completions",
                type="server_error",
                code="chat_template_unavailable",
            )
        return out

    return render
