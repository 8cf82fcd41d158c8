"""Worker side of the JSON contract (copied by path next to each worker; never imports llmos_edge)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

CONTRACT = 1


class WorkerError(Exception):
    """An error with a contract kind: unsupported_architecture, bad_input, check_failed, ..."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def progress(text: str) -> None:
    print(f"@progress {text}", flush=True)


def serve(ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """Read argv[1] request, dispatch on op, write argv[2] response; never exit without one."""
    req_path, resp_path = sys.argv[1], sys.argv[2]
    resp: dict[str, Any]
    try:
        with open(req_path) as f:
            req = json.loads(f.read())
        if req.get("contract") != CONTRACT:
            raise WorkerError("bad_request", f"contract {req.get('contract')} unsupported (want {CONTRACT})")
        op = ops.get(req.get("op", ""))
        if op is None:
            raise WorkerError("bad_request", f"unknown op {req.get('op')!r}; known: {sorted(ops)}")
        resp = {"contract": CONTRACT, "ok": True, **op(req)}
    except WorkerError as exc:
        resp = {"contract": CONTRACT, "ok": False, "error": {"kind": exc.kind, "message": str(exc)}}
    except MemoryError as exc:
        resp = {"contract": CONTRACT, "ok": False, "error": {"kind": "out_of_memory", "message": repr(exc)}}
    except Exception as exc:  # the host shows the traceback as a bug report
        traceback.print_exc()
        resp = {
            "contract": CONTRACT,
            "ok": False,
            "error": {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"},
        }
    with open(resp_path, "w") as f:
        json.dump(resp, f)
