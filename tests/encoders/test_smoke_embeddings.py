"""The smoke runner's embeddings check (encoders have no golden prompts), over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.runtime.config import config_for_model_dirs
from llmos_edge.runtime.errors import ConfigError
from llmos_edge.runtime.server import RunningServer
from llmos_edge.runtime.smoke import run_smoke


@pytest.fixture(scope="module")
def server(tiny_encoder_dir: Path) -> Iterator[RunningServer]:
    with RunningServer(config_for_model_dirs([tiny_encoder_dir], port=0)) as srv:
        yield srv


def test_no_prompts_on_an_encoder_runs_an_embeddings_check(
    server: RunningServer, same_texts: dict[str, str]
) -> None:
    report = run_smoke(server.url, {"model": None, "prompts": [], "embedding_check": same_texts,
                                    "limits": {"max_first_token_ms": 60_000}})
    assert report["ok"] is True, report
    assert report["kind"] == "embeddings"
    result = report["results"][0]
    assert result["dim"] == 32 and result["similar_cosine"] > 0.999
    assert report["summary"]["embedding_ms"] > 0


def test_paraphrase_not_closer_fails(server: RunningServer, same_texts: dict[str, str]) -> None:
    worse = {**same_texts, "similar": same_texts["unrelated"]}  # equal cosines: not closer
    report = run_smoke(server.url, {"prompts": [], "embedding_check": worse})
    assert report["ok"] is False
    assert "paraphrase cosine" in report["results"][0]["problems"][0]


def test_latency_limit_is_applied(server: RunningServer, same_texts: dict[str, str]) -> None:
    report = run_smoke(server.url, {"prompts": [], "embedding_check": same_texts,
                                    "limits": {"max_first_token_ms": 0.001}})
    assert report["ok"] is False
    assert "embedding latency" in report["summary"]["failures"][0]


def test_unknown_model_with_no_prompts_is_a_config_error(server: RunningServer) -> None:
    with pytest.raises(ConfigError, match="no 'prompts'"):
        run_smoke(server.url, {"model": "not-served", "prompts": []})
