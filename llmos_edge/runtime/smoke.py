"""Smoke runner: golden prompts + latency/throughput limits against a running (or started) runtime.

golden.json: {"model": id|null, "limits": {"max_first_token_ms": N, "min_tokens_per_s": N, "timeout_s": N},
              "prompts": [{"name", "messages" | "prompt", "expect_contains": [..], "max_tokens": N}]}
Encoders have no golden prompts: with none, a feature-extraction model gets an embeddings check instead
(finite vectors of one size, a paraphrase closer than an unrelated sentence, latency within
max_first_token_ms); optional "embedding_check": {"anchor", "similar", "unrelated"} overrides the texts.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .client import StreamOutcome, get_json, stream_chat
from .config import RuntimeConfig
from .errors import ConfigError


def _expectations(item: dict[str, Any]) -> list[str]:
    exp = item.get("expect_contains") or []
    return [exp] if isinstance(exp, str) else [str(e) for e in exp]


def completion_prompt(messages: list[dict[str, Any]]) -> str:
    """A chat golden prompt for a completion-mode model: the message texts as written, no template."""
    return "\n\n".join(str(m.get("content") or "") for m in messages)


def _one(
    base_url: str, model: str | None, item: dict[str, Any], api_key: str | None, timeout: float, mode: str
) -> dict[str, Any]:
    body: dict[str, Any] = {"temperature": 0, "max_tokens": int(item.get("max_tokens", 64))}
    if model:
        body["model"] = model
    if "messages" in item and mode != "completion":
        body["messages"] = item["messages"]
    elif "messages" in item:
        body["prompt"] = completion_prompt(item["messages"])
    else:
        body["prompt"] = item.get("prompt", "")
    out: StreamOutcome = stream_chat(base_url, body, api_key, timeout=timeout)
    missing = [e for e in _expectations(item) if e.lower() not in out.text.lower()]
    return {
        "name": item.get("name") or (item.get("prompt") or str(item.get("messages")))[:40],
        "mode": "chat" if "messages" in body else "completion",
        "ok": out.error is None and not missing,
        "error": out.error,
        "missing": missing,
        "text": out.text,
        "first_token_ms": None if out.first_token_s is None else round(out.first_token_s * 1000, 1),
        "tokens_per_s": out.decode_tokens_per_s(),
        "request_tokens_per_s": out.request_tokens_per_s(),
        "completion_tokens": out.completion_tokens,
    }


def _check_limits(results: list[dict[str, Any]], limits: dict[str, Any]) -> dict[str, Any]:
    ftl = [r["first_token_ms"] for r in results if r["first_token_ms"] is not None]
    tps = [r["tokens_per_s"] for r in results if r["tokens_per_s"] is not None]
    summary: dict[str, Any] = {
        "first_token_ms_median": statistics.median(ftl) if ftl else None,
        "tokens_per_s_median": statistics.median(tps) if tps else None,
        "request_tokens_per_s_median": _median(r.get("request_tokens_per_s") for r in results),
        "failures": [],
    }
    summary["failures"] = [_prompt_failure(r) for r in results if not r["ok"]]
    max_ftl, min_tps = limits.get("max_first_token_ms"), limits.get("min_tokens_per_s")
    if max_ftl is not None and not ftl:
        summary["failures"].append("first-token latency n/a: no prompt produced any text")
    elif max_ftl is not None and summary["first_token_ms_median"] > max_ftl:
        summary["failures"].append(
            f"first-token latency {summary['first_token_ms_median']} ms > {max_ftl} ms"
        )
    if min_tps is not None and not tps:
        _check_floor_by_bound(results, float(min_tps), summary)
    elif min_tps is not None and summary["tokens_per_s_median"] < min_tps:
        summary["failures"].append(
            f"decode {summary['tokens_per_s_median']:.1f} tokens/s < {min_tps} tokens/s"
        )
    return summary


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _check_floor_by_bound(results: list[dict[str, Any]], min_tps: float, summary: dict[str, Any]) -> None:
    """No decode rate was measurable (replies in one chunk): the whole-request rate, prefill included,
    is a lower bound of it; the floor holds when that bound clears it, and fails only when nothing can."""
    bound = summary["request_tokens_per_s_median"]
    if bound is not None and bound >= min_tps:
        summary["tokens_per_s_note"] = (
            f"decode rate n/a (replies came in one piece); the whole-request rate {bound:.1f} tokens/s, "
            f"a lower bound, clears the {min_tps} floor")
        return
    shown = "n/a" if bound is None else f"{bound:.1f} tokens/s"
    summary["failures"].append(
        f"decode tokens/s n/a: no prompt streamed 2+ tokens over a measurable time, and the whole-request "
        f"rate ({shown}) does not clear the {min_tps} tokens/s floor; raise the golden prompts' max_tokens"
    )


def _prompt_failure(result: dict[str, Any]) -> str:
    """One failed golden prompt: which, why, and what it answered."""
    answer = repr(result["text"][:200]) + ("…" if len(result["text"]) > 200 else "")
    if result["error"]:
        return f"{result['name']}: request failed: {result['error'][:300]}"
    return f"{result['name']}: answer lacks {', '.join(map(repr, result['missing']))}: {answer}"


def scaled_limits(limits: dict[str, Any], latency_scale: float) -> dict[str, Any]:
    """Limits for a slower stand-in of the target (QEMU, a throttled board): time x scale, rate / scale.

    The answers are still checked as they are; only the timing budget moves, and the report says so.
    """
    if latency_scale <= 0:
        raise ConfigError(f"latency scale must be > 0, not {latency_scale}")
    if latency_scale == 1:
        return dict(limits)
    out = dict(limits, latency_scale=latency_scale)
    for key in ("max_first_token_ms", "timeout_s"):
        if limits.get(key) is not None:
            out[key] = float(limits[key]) * latency_scale
    if limits.get("min_tokens_per_s") is not None:
        out["min_tokens_per_s"] = float(limits["min_tokens_per_s"]) / latency_scale
    return out


def run_smoke(
    base_url: str, golden: dict[str, Any], api_key: str | None = None, latency_scale: float = 1.0
) -> dict[str, Any]:
    """Run every golden prompt; the report says ok only if all prompts pass and limits hold."""
    prompts = golden.get("prompts") or []
    limits = scaled_limits(golden.get("limits") or {}, latency_scale)
    golden = dict(golden, limits=limits)
    if not prompts:
        embed_model = _embedding_model(base_url, golden.get("model"), api_key)
        if embed_model is None:
            raise ConfigError("golden file has no 'prompts' (and the model is not an embedding model)")
        return _embedding_smoke(base_url, embed_model, golden, api_key)
    timeout = float(limits.get("timeout_s") or 300)
    modes = _modes(base_url, api_key)
    model = golden.get("model")
    mode = modes.get(model or "", next(iter(modes.values())) if len(modes) == 1 else "chat")
    results = [_one(base_url, model, item, api_key, timeout, mode) for item in prompts]
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


EMBED_TEXTS = {
    "anchor": "The cat sits on the mat.",
    "similar": "A cat is sitting on a rug.",
    "unrelated": "Interest rates rose sharply on the stock market today.",
}


def _modes(base_url: str, api_key: str | None) -> dict[str, str]:
    """model id -> chat | completion | embedding, from /v1/models (older runtimes: chat). A server
    that cannot list them is left to fail on the prompts themselves, each with its own error."""
    try:
        listed = get_json(base_url + "/v1/models", api_key).get("data") or []
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(m.get("id")): str(m.get("mode") or "chat") for m in listed if isinstance(m, dict)}


def _embedding_model(base_url: str, model: str | None, api_key: str | None) -> str | None:
    """The model to check with embeddings: `model` (or the only feature-extraction one) if it is one."""
    try:
        listed = get_json(base_url + "/v1/models", api_key).get("data") or []
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot list models at {base_url}: {exc}") from exc
    encoders = [m["id"] for m in listed if m.get("task") == "feature-extraction"]
    if model:
        return model if model in encoders else None
    return encoders[0] if len(encoders) == 1 and len(listed) == 1 else None


def _post_json(url: str, body: dict[str, Any], api_key: str | None, timeout: float) -> Any:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _cos(a: list[float], b: list[float]) -> float:
    na = sum(x * x for x in a) ** 0.5
    nb = sum(x * x for x in b) ** 0.5
    return sum(x * y for x, y in zip(a, b, strict=True)) / max(na * nb, 1e-12)


def _vector_problems(vectors: list[list[float]], texts: dict[str, str]) -> list[str]:
    if len(vectors) != len(texts):
        return [f"expected {len(texts)} embeddings, got {len(vectors)}"]
    dims = {len(v) for v in vectors}
    if len(dims) != 1 or 0 in dims:
        return [f"embeddings have inconsistent or empty sizes {sorted(dims)}"]
    if any(x != x or abs(x) == float("inf") for v in vectors for x in v):
        return ["embeddings contain NaN or infinity"]
    if any(all(x == 0 for x in v) for v in vectors):
        return ["an embedding is all zeros"]
    return []


def _embed_once(
    base_url: str, body: dict[str, Any], api_key: str | None, timeout: float
) -> tuple[list[list[float]], str | None, float]:
    """(vectors, error, latency ms) of one /v1/embeddings call."""
    started, vectors, error = time.perf_counter(), [], None
    try:
        resp = _post_json(base_url + "/v1/embeddings", body, api_key, timeout)
        vectors = [d["embedding"] for d in sorted(resp["data"], key=lambda d: d["index"])]
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code}: {exc.read().decode(errors='replace')}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return vectors, error, round((time.perf_counter() - started) * 1000, 1)


def _embedding_smoke(
    base_url: str, model: str, golden: dict[str, Any], api_key: str | None
) -> dict[str, Any]:
    """Embed an anchor, a paraphrase and an unrelated sentence; the paraphrase must be closer."""
    limits = golden.get("limits") or {}
    texts = {**EMBED_TEXTS, **(golden.get("embedding_check") or {})}
    body = {"model": model, "input": [texts["anchor"], texts["similar"], texts["unrelated"]]}
    result: dict[str, Any] = {"name": "embeddings", "ok": False, "error": None}
    timeout = float(limits.get("timeout_s") or 300)
    vectors, result["error"], first_ms = _embed_once(base_url, body, api_key, timeout)
    latency_ms = first_ms  # the first request may include loading the model: time a second one
    if not result["error"]:
        vectors, result["error"], latency_ms = _embed_once(base_url, body, api_key, timeout)
    result["first_request_ms"] = first_ms
    problems = [] if result["error"] else _vector_problems(vectors, texts)
    if not result["error"] and not problems:
        sim, far = _cos(vectors[0], vectors[1]), _cos(vectors[0], vectors[2])
        result.update(dim=len(vectors[0]), similar_cosine=round(sim, 4), unrelated_cosine=round(far, 4))
        if sim <= far:
            problems.append(f"paraphrase cosine {sim:.4f} <= unrelated cosine {far:.4f}")
    result.update(ok=not result["error"] and not problems, problems=problems, latency_ms=latency_ms)
    summary: dict[str, Any] = {"embedding_ms": latency_ms, "failures": []}
    if not result["ok"]:
        summary["failures"].append(f"embeddings: {result['error'] or '; '.join(problems)}")
    max_ms = limits.get("max_first_token_ms")
    if max_ms is not None and latency_ms > max_ms:
        summary["failures"].append(f"embedding latency {latency_ms} ms > {max_ms} ms")
    return {
        "ok": bool(result["ok"]) and not summary["failures"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "url": base_url,
        "model": model,
        "kind": "embeddings",
        "limits": limits,
        "summary": summary,
        "results": [result],
    }


def _rate(value: Any, unit: str) -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def summary_text(report: dict[str, Any]) -> str:
    """What `smoke` prints: verdict, one line per prompt with its answer, timings, every failure."""
    results = report.get("results") or []
    failed = [r for r in results if not r.get("ok")]
    verdict = "ok" if report.get("ok") else "FAILED"
    lines = [f"smoke {verdict}: {len(results) - len(failed)}/{len(results)} checks passed ({report['url']})"]
    for r in results:
        mark = "ok  " if r.get("ok") else "FAIL"
        answer = r.get("text")
        detail = f"answer {answer[:120]!r}" if isinstance(answer, str) else ", ".join(r.get("problems") or [])
        lines.append(f"  {mark} {r.get('name')} [{r.get('mode', r.get('kind', 'embeddings'))}]: {detail}")
    summary = report.get("summary") or {}
    if "first_token_ms_median" in summary:
        lines.append(
            f"  first token {_rate(summary.get('first_token_ms_median'), 'ms')} (median), "
            f"decode {_rate(summary.get('tokens_per_s_median'), 'tokens/s')} (median)"
        )
    if summary.get("tokens_per_s_note"):
        lines.append(f"  note: {summary['tokens_per_s_note']}")
    if summary.get("failures"):
        lines.append("failures:")
        lines += [f"  - {f}" for f in summary["failures"]]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def smoke_with_config(
    config: RuntimeConfig, golden: dict[str, Any], url: str | None = None, latency_scale: float = 1.0
) -> dict[str, Any]:
    """Use the server at `url`, or start one from `config` on a free loopback port for the run."""
    if url:
        return run_smoke(url, golden, config.api_key(), latency_scale)
    from .server import RunningServer

    with RunningServer(config.with_overrides(host="127.0.0.1", port=0)) as server:
        return run_smoke(server.url, golden, config.api_key(), latency_scale)


def load_golden(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read golden file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"golden file {path}: expected a JSON object")
    return raw
