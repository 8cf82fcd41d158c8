"""The OpenAI-compatible API over real HTTP against a real server and real tiny models."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.runtime.errors import ConfigError
from llmos_edge.runtime.server import RunningServer

from .rt_helpers import MakeConfig, StartServer, chat, http, sse_events


@pytest.fixture
def server(
    make_config: MakeConfig,
    start_server: StartServer,
    decoder_dir: Path,
    plain_decoder_dir: Path,
    encoder_dir: Path,
) -> RunningServer:
    cfg = make_config(
        [
            {"id": "dec", "path": decoder_dir, "max_concurrency": 2, "max_queue": 8},
            {"id": "plain", "path": plain_decoder_dir},
            {"id": "enc", "path": encoder_dir},
        ],
        memory_budget_mb=4096,
    )
    return start_server(cfg)


def test_models_and_health(server: RunningServer) -> None:
    ids = [m["id"] for m in http("GET", server.url + "/v1/models").json()["data"]]
    assert ids == ["dec", "plain", "enc"]
    health = http("GET", server.url + "/health").json()
    assert health["status"] == "ok" and health["loaded"] == []


@pytest.mark.parametrize("model", ["dec", "plain"])
def test_chat_non_streaming_has_usage(server: RunningServer, model: str) -> None:
    r = http("POST", server.url + "/v1/chat/completions", chat(model, max_tokens=8))
    assert r.status == 200, r.body
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == model
    assert body["usage"]["completion_tokens"] <= 8 and body["usage"]["prompt_tokens"] > 0
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_streaming_sse_matches_non_streaming(server: RunningServer) -> None:
    plain = http("POST", server.url + "/v1/chat/completions", chat("dec", max_tokens=12)).json()
    r = http(
        "POST",
        server.url + "/v1/chat/completions",
        chat("dec", max_tokens=12, stream=True, stream_options={"include_usage": True}),
    )
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    events = sse_events(r.body)
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    finals = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    assert events[-1]["usage"] == plain["usage"]


def test_completions_endpoint(server: RunningServer) -> None:
    r = http(
        "POST",
        server.url + "/v1/completions",
        {"model": "dec", "prompt": "The capital", "max_tokens": 5, "temperature": 0},
    )
    assert r.status == 200, r.body
    assert r.json()["object"] == "text_completion" and isinstance(r.json()["choices"][0]["text"], str)


def test_eight_parallel_clients(server: RunningServer) -> None:
    """Half stream, half not; each gets exactly what it would get alone (requests never mix)."""

    def one(i: int) -> tuple[int, str]:
        body = chat("dec", f"client {i}", max_tokens=10, stream=i % 2 == 0)
        r = http("POST", server.url + "/v1/chat/completions", body)
        if r.status != 200:
            return r.status, r.body.decode()
        if body["stream"]:
            events = sse_events(r.body)
            return 200, "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        return 200, r.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert [s for s, _ in results] == [200] * 8, results
    for i in (2, 3):
        solo = http(
            "POST", server.url + "/v1/chat/completions", chat("dec", f"client {i}", max_tokens=10)
        ).json()
        assert results[i][1] == solo["choices"][0]["message"]["content"]


def test_embeddings(server: RunningServer) -> None:
    r = http(
        "POST",
        server.url + "/v1/embeddings",
        {"model": "enc", "input": ["hello world", "Paris", "hello world"]},
    )
    assert r.status == 200, r.body
    vecs = [d["embedding"] for d in r.json()["data"]]
    assert len(vecs) == 3 and all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in vecs)  # normalized
    assert vecs[0] == pytest.approx(vecs[2], abs=1e-5)
    assert r.json()["usage"]["prompt_tokens"] > 0


BAD = [
    ("malformed json", "/v1/chat/completions", b"{not json", 400, "invalid_json"),
    (
        "unknown model",
        "/v1/chat/completions",
        {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        404,
        "model_not_found",
    ),
    (
        "negative temperature",
        "/v1/chat/completions",
        {**chat("dec"), "temperature": -1},
        400,
        "invalid_value",
    ),
    ("zero max_tokens", "/v1/chat/completions", {**chat("dec"), "max_tokens": 0}, 400, "invalid_value"),
    ("n=2", "/v1/chat/completions", {**chat("dec"), "n": 2}, 400, "invalid_value"),
    (
        "five stops",
        "/v1/chat/completions",
        {**chat("dec"), "stop": ["a", "b", "c", "d", "e"]},
        400,
        "invalid_value",
    ),
    ("no messages", "/v1/chat/completions", {"model": "dec"}, 400, "invalid_value"),
    (
        "bad role",
        "/v1/chat/completions",
        {"model": "dec", "messages": [{"role": "x", "content": "y"}]},
        400,
        "invalid_value",
    ),
    ("body not an object", "/v1/chat/completions", [1, 2], 400, "invalid_json"),
    ("chat on an encoder", "/v1/chat/completions", chat("enc"), 400, "invalid_value"),
    ("embeddings on a decoder", "/v1/embeddings", {"model": "dec", "input": "x"}, 400, "invalid_value"),
    ("empty embedding input", "/v1/embeddings", {"model": "enc", "input": []}, 400, "invalid_value"),
    ("oversize prompt", "/v1/chat/completions", chat("dec", "word " * 5000), 400, "context_length_exceeded"),
    ("unknown route", "/v1/nothing", {}, 404, "not_found"),
]


@pytest.mark.parametrize(("name", "path", "body", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_4xx_and_server_keeps_serving(
    server: RunningServer, name: str, path: str, body: Any, status: int, code: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    r = http("POST", server.url + path, None if raw else body, raw=raw)
    assert r.status == status, r.body
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and set(err) == {"message", "type", "param", "code"}
    ok = http("POST", server.url + "/v1/chat/completions", chat("dec", max_tokens=2))
    assert ok.status == 200


def test_oversize_body_is_413(make_config: MakeConfig, start_server: StartServer, decoder_dir: Path) -> None:
    srv = start_server(make_config([{"id": "dec", "path": decoder_dir}], max_body_bytes=1000))
    r = http("POST", srv.url + "/v1/chat/completions", chat("dec", "x" * 2000))
    assert r.status == 413 and r.json()["error"]["code"] == "body_too_large"


def test_client_disconnect_mid_stream_keeps_server_alive(server: RunningServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps(chat("dec", max_tokens=200, stream=True)).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        assert s.recv(64).startswith(b"HTTP/1.0 200")
    assert http("POST", server.url + "/v1/chat/completions", chat("dec", max_tokens=2)).status == 200


def test_api_key_required_when_configured(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_TEST_KEY_RT", "s3cret")
    srv = start_server(make_config([{"id": "dec", "path": decoder_dir}], api_key_env="LLMOS_TEST_KEY_RT"))
    assert http("GET", srv.url + "/v1/models").status == 401
    wrong = http("GET", srv.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert http("GET", srv.url + "/v1/models", headers={"Authorization": "Bearer s3cret"}).status == 200
    assert http("GET", srv.url + "/health").status == 200  # liveness stays open for supervisors


def test_refuses_lan_bind_without_api_key(make_config: MakeConfig, decoder_dir: Path) -> None:
    with pytest.raises(ConfigError, match="API key"):
        RunningServer(make_config([{"id": "dec", "path": decoder_dir}], host="0.0.0.0"))


def test_metrics_prometheus_text(server: RunningServer) -> None:
    http("POST", server.url + "/v1/chat/completions", chat("dec", max_tokens=4))
    http("POST", server.url + "/v1/chat/completions", chat("nope"))
    text = http("GET", server.url + "/metrics").body.decode()
    assert 'llmos_requests_total{endpoint="/v1/chat/completions",model="dec",status="200"} 1' in text
    assert 'llmos_requests_total{endpoint="/v1/chat/completions",model="nope",status="404"} 1' in text
    assert 'llmos_tokens_total{kind="completion",model="dec"}' in text
    assert 'llmos_request_latency_seconds_count{model="dec"} 1' in text
    assert "llmos_models_loaded 1" in text
    assert 'llmos_queue_depth{model="dec"} 0' in text
    assert 'llmos_model_load_rss_delta_mb{model="dec"}' in text


def test_stream_is_incremental(server: RunningServer) -> None:
    """Chunks arrive while generating: the reader sees the first one before the stream ends."""
    import urllib.request

    req = urllib.request.Request(
        server.url + "/v1/chat/completions", data=json.dumps(chat("dec", max_tokens=64, stream=True)).encode()
    )
    seen: list[bytes] = []
    with urllib.request.urlopen(req, timeout=60) as resp:
        for line in resp:
            if line.startswith(b"data: "):
                seen.append(line)
    assert len(seen) >= 3 and seen[-1].strip() == b"data: [DONE]"


def test_concurrent_streams_and_errors_do_not_crash(server: RunningServer) -> None:
    errors: list[int] = []

    def bad() -> None:
        errors.append(http("POST", server.url + "/v1/chat/completions", raw=b"\xff\xfe").status)

    threads = [threading.Thread(target=bad) for _ in range(4)]
    for t in threads:
        t.start()
    ok = http("POST", server.url + "/v1/chat/completions", chat("dec", max_tokens=4, stream=True))
    for t in threads:
        t.join()
    assert errors == [400] * 4 and ok.status == 200
