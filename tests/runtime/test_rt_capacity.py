"""Memory budget, LRU unload, bounded queues: the 429 and 503 paths over real HTTP."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .rt_helpers import MakeConfig, StartServer, chat, http


def _loaded(url: str) -> list[str]:
    return http("GET", url + "/health").json()["loaded"]


def test_lru_unloads_least_recent_under_small_budget(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path, plain_decoder_dir: Path
) -> None:
    models = [
        {"id": "a", "path": decoder_dir, "est_memory_mb": 60},
        {"id": "b", "path": plain_decoder_dir, "est_memory_mb": 60},
    ]
    srv = start_server(make_config(models, memory_budget_mb=100))
    assert http("POST", srv.url + "/v1/chat/completions", chat("a", max_tokens=2)).status == 200
    assert _loaded(srv.url) == ["a"]
    assert http("POST", srv.url + "/v1/chat/completions", chat("b", max_tokens=2)).status == 200
    assert _loaded(srv.url) == ["b"]
    assert http("POST", srv.url + "/v1/chat/completions", chat("a", max_tokens=2)).status == 200
    assert _loaded(srv.url) == ["a"]
    assert "llmos_model_evictions 2" in http("GET", srv.url + "/metrics").body.decode()


def test_lru_keeps_both_when_they_fit_and_evicts_the_oldest(
    make_config: MakeConfig,
    start_server: StartServer,
    decoder_dir: Path,
    plain_decoder_dir: Path,
    encoder_dir: Path,
) -> None:
    models = [
        {"id": "a", "path": decoder_dir, "est_memory_mb": 40},
        {"id": "b", "path": plain_decoder_dir, "est_memory_mb": 40},
        {"id": "e", "path": encoder_dir, "est_memory_mb": 40},
    ]
    srv = start_server(make_config(models, memory_budget_mb=100))
    for mid in ("a", "b", "a"):
        assert http("POST", srv.url + "/v1/chat/completions", chat(mid, max_tokens=2)).status == 200
    assert http("POST", srv.url + "/v1/embeddings", {"model": "e", "input": "x"}).status == 200
    assert sorted(_loaded(srv.url)) == ["a", "e"]  # b was least recently used


def test_model_larger_than_budget_is_503(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path
) -> None:
    srv = start_server(
        make_config([{"id": "big", "path": decoder_dir, "est_memory_mb": 500}], memory_budget_mb=100)
    )
    r = http("POST", srv.url + "/v1/chat/completions", chat("big"))
    assert r.status == 503
    err = r.json()["error"]
    assert err["code"] == "model_too_large" and "memory_budget_mb" in err["message"]
    assert http("GET", srv.url + "/health").status == 200


def test_estimate_from_file_sizes_drives_the_503(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path
) -> None:
    """No est_memory_mb: the estimate is weight file bytes x memory_factor."""
    srv = start_server(make_config([{"id": "m", "path": decoder_dir}], memory_budget_mb=0.01))
    assert (
        http("POST", srv.url + "/v1/chat/completions", chat("m")).json()["error"]["code"] == "model_too_large"
    )


def test_no_room_next_to_a_busy_model_is_503_with_retry_after(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path, plain_decoder_dir: Path
) -> None:
    models = [
        {"id": "a", "path": decoder_dir, "est_memory_mb": 60},
        {"id": "b", "path": plain_decoder_dir, "est_memory_mb": 60},
    ]
    srv = start_server(make_config(models, memory_budget_mb=100))
    with srv.runtime.manager.use("a"):  # a real request slot held on model a
        r = http("POST", srv.url + "/v1/chat/completions", chat("b"))
    assert r.status == 503 and r.json()["error"]["code"] == "memory_busy" and r.headers["Retry-After"]
    assert http("POST", srv.url + "/v1/chat/completions", chat("b", max_tokens=2)).status == 200


def test_full_queue_is_429_with_retry_after(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path
) -> None:
    srv = start_server(make_config([{"id": "a", "path": decoder_dir, "max_concurrency": 1, "max_queue": 1}]))
    results: list[int] = []
    with srv.runtime.manager.use("a"):  # occupies the only running slot
        waiter = threading.Thread(
            target=lambda: results.append(
                http("POST", srv.url + "/v1/chat/completions", chat("a", max_tokens=2)).status
            )
        )
        waiter.start()
        deadline = time.monotonic() + 10
        while srv.runtime.manager.slots["a"].waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 'llmos_queue_depth{model="a"} 1' in http("GET", srv.url + "/metrics").body.decode()
        r = http("POST", srv.url + "/v1/chat/completions", chat("a"))
        assert r.status == 429, r.body
        assert r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "rate_limit_error"
    waiter.join(30)
    assert results == [200]  # the queued request ran once the slot freed


def test_queue_timeout_is_429(make_config: MakeConfig, start_server: StartServer, decoder_dir: Path) -> None:
    cfg = make_config(
        [{"id": "a", "path": decoder_dir, "max_concurrency": 1, "max_queue": 4}], queue_timeout_s=0.3
    )
    srv = start_server(cfg)
    with srv.runtime.manager.use("a"):
        r = http("POST", srv.url + "/v1/chat/completions", chat("a"))
    assert r.status == 429 and r.json()["error"]["code"] == "queue_timeout"


def test_broken_model_dir_is_503_not_a_crash(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "llmos_model.json").write_text((decoder_dir / "llmos_model.json").read_text())
    (broken / "model.onnx").write_bytes(b"not a graph")
    srv = start_server(make_config([{"id": "x", "path": broken}, {"id": "ok", "path": decoder_dir}]))
    r = http("POST", srv.url + "/v1/chat/completions", chat("x"))
    assert r.status == 503 and r.json()["error"]["code"] == "model_load_failed"
    assert http("POST", srv.url + "/v1/chat/completions", chat("ok", max_tokens=2)).status == 200
