"""HTTP helpers for the runtime tests (stdlib urllib against a real server)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmos_edge.runtime.config import RuntimeConfig
from llmos_edge.runtime.server import RunningServer


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Reply:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def sse_events(body: bytes) -> list[Any]:
    lines = [ln[6:] for ln in body.decode().splitlines() if ln.startswith("data: ")]
    assert lines and lines[-1] == "[DONE]", f"stream must end with [DONE]: {body[-200:]!r}"
    return [json.loads(x) for x in lines[:-1]]


def chat(model: str, content: str = "Hello there", **kw: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 16,
        **kw,
    }


MakeConfig = Callable[..., RuntimeConfig]
StartServer = Callable[[RuntimeConfig], RunningServer]
