"""A tiny stdlib client for the runtime's API (smoke runner, CLI, tests): streaming with timings."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

MIN_SPAN_S = 1e-3  # below this a rate is noise (a buffered reply read at once), not a throughput


@dataclass
class StreamOutcome:
    text: str = ""
    status: int = 200
    error: str | None = None
    first_token_s: float | None = None
    total_s: float = 0.0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str | None = None
    chunks: list[str] = field(default_factory=list)

    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time after the first, or None (n/a) when that is not a
        measurement: under 2 tokens, text that arrived in one chunk, or no measurable time."""
        if self.first_token_s is None or self.completion_tokens < 2 or len(self.chunks) < 2:
            return None
        span = self.total_s - self.first_token_s
        return (self.completion_tokens - 1) / span if span >= MIN_SPAN_S else None

    def request_tokens_per_s(self) -> float | None:
        """All tokens over the whole request, prefill included: a lower bound of the decode rate that
        exists even when the reply came in one chunk (a short golden prompt on a fast device)."""
        if self.completion_tokens < 1 or self.total_s < MIN_SPAN_S:
            return None
        return self.completion_tokens / self.total_s



def _request(url: str, body: Any, api_key: str | None) -> urllib.request.Request:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")


def _apply(event: dict[str, Any], out: StreamOutcome, started: float) -> None:
    if event.get("usage"):
        out.completion_tokens = int(event["usage"]["completion_tokens"])
        out.prompt_tokens = int(event["usage"]["prompt_tokens"])
    for choice in event.get("choices") or []:
        piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        if piece:
            if out.first_token_s is None:
                out.first_token_s = time.perf_counter() - started
            out.chunks.append(piece)
            out.text += piece
        out.finish_reason = choice.get("finish_reason") or out.finish_reason


def stream_chat(
    base_url: str, body: dict[str, Any], api_key: str | None = None, timeout: float = 300
) -> StreamOutcome:
    """POST a streaming chat (or completion when body has 'prompt') and collect it with timings."""
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    out, started = StreamOutcome(), time.perf_counter()
    try:
        with urllib.request.urlopen(_request(base_url + path, body, api_key), timeout=timeout) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                _apply(json.loads(line[6:]), out, started)
    except urllib.error.HTTPError as exc:
        out.status, out.error = exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        out.status, out.error = 0, f"{type(exc).__name__}: {exc}"
    out.total_s = time.perf_counter() - started
    return out


def get_json(url: str, api_key: str | None = None, timeout: float = 10) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())
