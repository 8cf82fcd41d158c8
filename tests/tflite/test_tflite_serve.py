"""TFLite models behind the runtime's real HTTP server: streaming chat, /v1/embeddings, and a prompt
longer than the KV cache answered with a clear 400."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llmos_edge.runtime.config import parse_config
from llmos_edge.runtime.server import RunningServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from rt_helpers import http, sse_events


@pytest.fixture
def server(tiny_decoder: Path, tiny_encoder: Path, tmp_path: Path) -> Iterator[str]:
    raw = {
        "host": "127.0.0.1",
        "port": 0,
        "audit_log": str(tmp_path / "audit.jsonl"),
        "models": [{"id": "dec", "path": str(tiny_decoder)}, {"id": "enc", "path": str(tiny_encoder)}],
    }
    srv = RunningServer(parse_config(raw, tmp_path)).start()
    try:
        yield srv.url
    finally:
        srv.stop()


def test_chat_streams_from_tflite(server: str) -> None:
    body = {
        "model": "dec",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "max_tokens": 8,
        "stream": True,
    }
    reply = http("POST", f"{server}/v1/chat/completions", body)
    assert reply.status == 200, reply.body
    events = sse_events(reply.body)
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    plain = http("POST", f"{server}/v1/chat/completions", {**body, "stream": False}).json()
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert streamed == plain["choices"][0]["message"]["content"]  # greedy: same text both ways


def test_embeddings_endpoint_serves_tflite(server: str, tiny_encoder: Path) -> None:
    from llmos_edge.runtime.descriptor import read_descriptor
    from llmos_edge.runtime.engine_tflite import TFLiteEncoderEngine
    from llmos_edge.runtime.engines.base import EngineOptions

    texts = ["the capital of france is paris", "edge device"]
    reply = http("POST", f"{server}/v1/embeddings", {"model": "enc", "input": texts})
    assert reply.status == 200, reply.body
    data = reply.json()["data"]
    got = np.asarray([d["embedding"] for d in data])
    direct = TFLiteEncoderEngine(tiny_encoder, read_descriptor(tiny_encoder), EngineOptions()).embed(texts)
    assert got.shape == (2, 32) and np.allclose(got, np.asarray(direct), atol=1e-6)


def test_prompt_longer_than_cache_is_a_400(server: str) -> None:
    body = {"model": "dec", "messages": [{"role": "user", "content": "x" * 200}], "max_tokens": 4}
    reply = http("POST", f"{server}/v1/chat/completions", body)
    assert reply.status == 400
    err = reply.json()["error"]
    assert err["code"] == "context_length_exceeded" and "64" in err["message"]


def test_smoke_runner_drives_tflite(tiny_decoder: Path, tmp_path: Path) -> None:
    """The bundle's smoke test (golden prompts + latency limits) works unchanged on a TFLite model."""
    from llmos_edge.runtime.smoke import smoke_with_config

    raw = {
        "host": "127.0.0.1",
        "port": 0,
        "audit_log": str(tmp_path / "a.jsonl"),
        "models": [{"id": "dec", "path": str(tiny_decoder)}],
    }
    golden = {
        "model": "dec",
        "limits": {"max_first_token_ms": 5000, "min_tokens_per_s": 1},
        "prompts": [{"name": "hi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}],
    }
    report = smoke_with_config(parse_config(raw, tmp_path), golden)
    assert report["ok"], report
    assert report["summary"]["tokens_per_s_median"] > 1
