"""Running deploys against test devices."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

from llmos_edge.deploy.preflight import PreflightOptions
from llmos_edge.deploy.run import DeployOptions, DeployReport, Events, deploy_to
from llmos_edge.deploy.source import load_bundle
from llmos_edge.errors import DeviceError

from .devices import Device


def assert_serves_tiny(port: int) -> None:
    """The deployed runtime lists the tiny model and answers a chat request on the device's port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
        assert "tiny" in [m["id"] for m in json.loads(r.read())["data"]]
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read())["choices"][0]["message"]["role"] == "assistant"

def run_deploy(
    dev: Device,
    bundle: Path,
    pubkey: Path | None,
    *,
    allow_unsigned: bool = False,
    events: Events | None = None,
    ssh: dict[str, Any] | None = None,
    **kw: Any,
) -> DeployReport:
    pre = {k: kw.pop(k) for k in list(kw) if k in PreflightOptions.__dataclass_fields__}
    src = load_bundle(bundle, pubkey, allow_unsigned=allow_unsigned)
    opts = DeployOptions(
        root=dev.root,
        preflight=PreflightOptions(**pre),
        allow_unsigned=allow_unsigned,
        smoke_timeout=kw.pop("smoke_timeout", 20),
        **kw,
    )
    return asyncio.run(deploy_to(dev.address, src, opts, dev.options(**(ssh or {})), events))


class CutAt(Events):
    """Raises once `fraction` of the bytes to send have gone: a clean drop mid-transfer."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.total = 0
        self.done = 0

    def start_bytes(self, total: int) -> None:
        self.total = total

    def advance(self, n: int) -> None:
        self.done += n
        if self.total and self.done >= self.fraction * self.total:
            raise DeviceError(f"lost the connection (test cut at {self.fraction:.0%})")
