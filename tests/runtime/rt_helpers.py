"""HTTP helpers for the runtime tests (stdlib urllib against a real server)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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


def seal(root: Path, key: Path | None, version: str = "1.0.0") -> Path:
    """Write manifest.json (every file's sha256 and size) and, with a key, manifest.sig: a real bundle
    as far as verification goes, for bundle-shaped folders the runtime tests build by hand."""
    from llmos_edge.bundle import manifest as mf
    from llmos_edge.bundle.keys import sign
    from llmos_edge.fsutil import sha256_file

    (root / mf.SIGNATURE).unlink(missing_ok=True)
    files = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in mf.NOT_IN_FILES:
                files[rel] = {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
    data = mf.dump({"schema_version": mf.SCHEMA_VERSION, "name": root.name, "bundle_version": version,
                    "files": dict(sorted(files.items()))})
    (root / mf.MANIFEST).write_bytes(data)
    if key is not None:
        (root / mf.SIGNATURE).write_bytes(sign(data, key)[0])
    return root
