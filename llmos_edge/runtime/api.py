"""OpenAI request parsing/validation and response shapes (pure functions, no I/O)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .engines.base import GenParams
from .errors import ApiError, bad_param

ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass
class TextRequest:
    kind: str  # "chat" | "completion"
    model: str
    params: GenParams
    stream: bool
    include_usage: bool
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    def prompt_text(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages or [])


def _num(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    val = body.get(key, default)
    if val is None:
        return default
    if isinstance(val, bool) or not isinstance(val, int | float) or not lo <= val <= hi:
        raise bad_param(key, f"'{key}' must be a number in [{lo}, {hi}], got {val!r}")
    return float(val)


def _int(body: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    val = body.get(key, default)
    if val is None:
        return default
    if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
        raise bad_param(key, f"'{key}' must be an integer in [{lo}, {hi}], got {val!r}")
    return val


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or len(items) > 4 or not all(isinstance(s, str) and s for s in items):
        raise bad_param("stop", "'stop' must be a non-empty string or a list of up to 4 of them")
    return tuple(items)


def parse_params(body: dict[str, Any], default_max: int) -> GenParams:
    if _int(body, "n", 1, 1, 1) != 1:
        raise bad_param("n", "only n=1 is supported")
    max_tokens = _int(body, "max_completion_tokens", None, 1, 1 << 20)
    max_tokens = _int(body, "max_tokens", max_tokens, 1, 1 << 20)
    return GenParams(
        max_tokens=max_tokens or default_max,
        temperature=_num(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_num(body, "top_p", 1.0, 1e-6, 1.0),
        top_k=int(_int(body, "top_k", 0, 0, 1 << 20) or 0),
        repetition_penalty=_num(body, "repetition_penalty", 1.0, 0.01, 10.0),
        seed=_int(body, "seed", None, 0, 2**63 - 1),
        stop=_stop(body),
    )


def _content(msg: dict[str, Any], i: int) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise bad_param(f"messages[{i}].content", "content must be a string or a list of text parts")


def parse_messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise bad_param("messages", "'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_param(f"messages[{i}].role", f"each message needs a role in {ROLES}")
        out.append({"role": m["role"], "content": _content(m, i)})
    return out


def parse_text_request(kind: str, body: Any, model: str, default_max: int) -> TextRequest:
    params = parse_params(body, default_max)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_param("stream", "'stream' must be true or false")
    opts = body.get("stream_options") or {}
    req = TextRequest(kind, model, params, stream, bool(isinstance(opts, dict) and opts.get("include_usage")))
    if kind == "chat":
        req.messages = parse_messages(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise bad_param("prompt", "'prompt' must be a string")
        req.prompt = prompt
    return req


def require_model(body: Any, available: list[str]) -> str:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if model is None and len(available) == 1:
        return available[0]
    if not isinstance(model, str) or not model:
        raise bad_param("model", f"'model' is required; available: {available}")
    return model


def parse_embedding_input(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
        raise bad_param("input", "'input' must be a string or a non-empty list of strings")
    if len(items) > 256:
        raise bad_param("input", "at most 256 inputs per request")
    return items


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(
    req: TextRequest, text: str, finish: str, prompt_n: int, completion_n: int
) -> dict[str, Any]:
    if req.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        obj = "chat.completion"
    else:
        choice, obj = {"index": 0, "text": text, "logprobs": None}, "text_completion"
    choice["finish_reason"] = finish
    return {
        "id": req.id,
        "object": obj,
        "created": req.created,
        "model": req.model,
        "choices": [choice],
        "usage": usage(prompt_n, completion_n),
    }


def chunk_body(req: TextRequest, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
    if req.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        obj = "chat.completion.chunk"
    else:
        choice, obj = {"index": 0, "text": text or "", "logprobs": None}, "text_completion"
    choice["finish_reason"] = finish
    return {"id": req.id, "object": obj, "created": req.created, "model": req.model, "choices": [choice]}
