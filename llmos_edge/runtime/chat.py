"""Chat templates: render the model's Jinja template without making jinja2 a device dependency."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Messages = list[dict[str, Any]]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def find_template(model_dir: Path, from_descriptor: str | None) -> str | None:
    """Descriptor first, then tokenizer_config.json, then chat_template.jinja."""
    if from_descriptor:
        return from_descriptor
    cfg = model_dir / "tokenizer_config.json"
    if cfg.exists():
        tpl = json.loads(cfg.read_text()).get("chat_template")
        if isinstance(tpl, str) and tpl:
            return tpl
    jinja = model_dir / "chat_template.jinja"
    return jinja.read_text() if jinja.exists() else None


def render_chatml(messages: Messages, add_generation_prompt: bool = True) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


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


def make_renderer(
    template: str | None, special: dict[str, str], native: Callable[[str, str], str] | None = None
) -> Callable[[Messages], str]:
    """Pick the renderer once: native (onnxruntime-genai) > jinja2 > built-in ChatML."""
    tpl = template or CHATML

    def render(messages: Messages) -> str:
        if native is not None:
            return native(json.dumps(messages), tpl)
        out = render_with_jinja(tpl, messages, special)
        return out if out is not None else render_chatml(messages)

    return render
