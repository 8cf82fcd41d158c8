"""Smoke runner: golden prompts + latency/throughput limits against a running (or started) runtime.

golden.json: {"model": id|null, "limits": {"max_first_token_ms": N, "min_tokens_per_s": N, "timeout_s": N},
              "prompts": [{"name", "messages" | "prompt", "expect_contains": [..], "max_tokens": N}]}
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .client import StreamOutcome, stream_chat
from .config import RuntimeConfig
from .errors import ConfigError


def _expectations(item: dict[str, Any]) -> list[str]:
    exp = item.get("expect_contains") or []
    return [exp] if isinstance(exp, str) else [str(e) for e in exp]


def _one(
    base_url: str, model: str | None, item: dict[str, Any], api_key: str | None, timeout: float
) -> dict[str, Any]:
    body: dict[str, Any] = {"temperature": 0, "max_tokens": int(item.get("max_tokens", 64))}
    if model:
        body["model"] = model
    if "messages" in item:
        body["messages"] = item["messages"]
    else:
        body["prompt"] = item.get("prompt", "")
    out: StreamOutcome = stream_chat(base_url, body, api_key, timeout=timeout)
    missing = [e for e in _expectations(item) if e.lower() not in out.text.lower()]
    return {
        "name": item.get("name") or (item.get("prompt") or str(item.get("messages")))[:40],
        "ok": out.error is None and not missing,
        "error": out.error,
        "missing": missing,
        "text": out.text,
        "first_token_ms": None if out.first_token_s is None else round(out.first_token_s * 1000, 1),
        "tokens_per_s": out.decode_tokens_per_s(),
        "completion_tokens": out.completion_tokens,
    }


def _check_limits(results: list[dict[str, Any]], limits: dict[str, Any]) -> dict[str, Any]:
    ftl = [r["first_token_ms"] for r in results if r["first_token_ms"] is not None]
    tps = [r["tokens_per_s"] for r in results if r["tokens_per_s"] is not None]
    summary: dict[str, Any] = {
        "first_token_ms_median": statistics.median(ftl) if ftl else None,
        "tokens_per_s_median": statistics.median(tps) if tps else None,
        "failures": [],
    }
    max_ftl, min_tps = limits.get("max_first_token_ms"), limits.get("min_tokens_per_s")
    if max_ftl is not None and (not ftl or summary["first_token_ms_median"] > max_ftl):
        summary["failures"].append(
            f"first-token latency {summary['first_token_ms_median']} ms > {max_ftl} ms"
        )
    if min_tps is not None and (not tps or summary["tokens_per_s_median"] < min_tps):
        summary["failures"].append(f"decode {summary['tokens_per_s_median']} tokens/s < {min_tps} tokens/s")
    return summary


def run_smoke(base_url: str, golden: dict[str, Any], api_key: str | None = None) -> dict[str, Any]:
    """Run every golden prompt; the report says ok only if all prompts pass and limits hold."""
    prompts = golden.get("prompts") or []
    if not prompts:
        raise ConfigError("golden file has no 'prompts'")
    limits = golden.get("limits") or {}
    timeout = float(limits.get("timeout_s") or 300)
    results = [_one(base_url, golden.get("model"), item, api_key, timeout) for item in prompts]
    summary = _check_limits(results, limits)
    ok = all(r["ok"] for r in results) and not summary["failures"]
    return {
        "ok": ok,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "url": base_url,
        "limits": limits,
        "summary": summary,
        "results": results,
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def smoke_with_config(
    config: RuntimeConfig, golden: dict[str, Any], url: str | None = None
) -> dict[str, Any]:
    """Use the server at `url`, or start one from `config` on a free loopback port for the run."""
    if url:
        return run_smoke(url, golden, config.api_key())
    from .server import RunningServer

    with RunningServer(config.with_overrides(host="127.0.0.1", port=0)) as server:
        return run_smoke(server.url, golden, config.api_key())


def load_golden(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read golden file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"golden file {path}: expected a JSON object")
    return raw
