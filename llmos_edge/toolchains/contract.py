"""The versioned JSON contract between llmos-edge and worker scripts run in a toolchain env.

A worker is a plain script (never importing llmos_edge) run by path with the toolchain's python.
It reads a request file {"contract": 1, "op": ...} and writes a response file
{"contract": 1, "ok": true, ...} or {"contract": 1, "ok": false, "error": {"kind", "message"}}.
Lines it prints starting with "@progress " are shown to the user; other output is kept for errors.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BugError, CheckFailed, UserError
from .manager import Toolchain

CONTRACT = 1
WORKERS_DIR = Path(__file__).resolve().parent / "workers"
# error kinds a worker may report, and what the user can do about each
_USER_KINDS: dict[str, str] = {
    "unsupported_architecture": "choose a model whose architecture the exporter supports",
    "bad_input": "check the model folder/file the recipe points at",
    "out_of_memory": "use a machine with more RAM or a smaller model",
}
_CHECK_KINDS = {"check_failed"}


def run_worker(
    tc: Toolchain,
    script: str,
    request: dict[str, Any],
    *,
    on_progress: Callable[[str], None] | None = None,
    timeout_s: float = 7200,
) -> dict[str, Any]:
    """Run workers/<script> in `tc` with `request`; return the response or raise a mapped error."""
    path = WORKERS_DIR / script
    with tempfile.TemporaryDirectory(prefix="llmos-worker-") as tmp:
        req_file, resp_file = Path(tmp) / "request.json", Path(tmp) / "response.json"
        req_file.write_text(json.dumps({"contract": CONTRACT, **request}))
        tail = _stream(tc, [str(tc.python), str(path), str(req_file), str(resp_file)], on_progress, timeout_s)
        if not resp_file.exists():
            raise BugError(f"worker {script} ({request.get('op')}) died without a response:\n{tail}")
        resp: dict[str, Any] = json.loads(resp_file.read_text())
    return check_response(resp, script, tail)


def check_response(resp: dict[str, Any], script: str, tail: str = "") -> dict[str, Any]:
    """Validate the contract version and map error kinds to llmos_edge errors."""
    if resp.get("contract") != CONTRACT:
        raise BugError(f"worker {script} speaks contract {resp.get('contract')}, expected {CONTRACT}")
    if resp.get("ok"):
        return resp
    err = resp.get("error") or {}
    kind, message = str(err.get("kind", "internal")), str(err.get("message", "no message"))
    if kind in _USER_KINDS:
        exc = UserError(message, hints=[_USER_KINDS[kind]])
        exc.kind = kind  # type: ignore[attr-defined]
        raise exc
    if kind in _CHECK_KINDS:
        raise CheckFailed(message)
    raise BugError(f"worker {script} failed ({kind}): {message}\n{tail}")


def _stream(
    tc: Toolchain, cmd: list[str], on_progress: Callable[[str], None] | None, timeout_s: float
) -> str:
    """Run the worker, forwarding @progress lines; return the last lines of its output."""
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_worker_env(tc)
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line.startswith("@progress "):
                if on_progress:
                    on_progress(line[len("@progress ") :])
            else:
                tail = [*tail[-60:], line]
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return "\n".join(tail[-30:])


def _worker_env(tc: Toolchain) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{tc.env_dir / 'bin'}:{env.get('PATH', '')}",
        }
    )
    return env
