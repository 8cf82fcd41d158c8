"""Runtime fixtures: real tiny models, real servers on ephemeral loopback ports, a stdlib HTTP helper.

Models come from the shared session fixtures `tiny_decoder_dir` / `tiny_encoder_dir` (tests/conftest.py).
LLMOS_TEST_TINY_DECODER / LLMOS_TEST_TINY_ENCODER / LLMOS_TEST_SMOLLM2 may name model dirs instead.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.runtime.config import RuntimeConfig, parse_config
from llmos_edge.runtime.server import RunningServer


def _shared_model(request: pytest.FixtureRequest, fixture: str, env: str) -> Path:
    """${env} (a model dir) overrides the shared fixture, e.g. to reuse a model built elsewhere."""
    if os.environ.get(env):
        return Path(os.environ[env])
    try:
        return Path(request.getfixturevalue(fixture))
    except pytest.FixtureLookupError:
        pytest.skip(f"needs the shared `{fixture}` fixture (tests/conftest.py) or ${env}")


@pytest.fixture(scope="session")
def decoder_dir(request: pytest.FixtureRequest) -> Path:
    """onnx-genai tiny decoder (format onnx-genai, task text-generation)."""
    return _shared_model(request, "tiny_decoder_dir", "LLMOS_TEST_TINY_DECODER")


@pytest.fixture(scope="session")
def encoder_dir(request: pytest.FixtureRequest) -> Path:
    return _shared_model(request, "tiny_encoder_dir", "LLMOS_TEST_TINY_ENCODER")


@pytest.fixture(scope="session")
def plain_decoder_dir(decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same graph as format "onnx": the genai builder's graph has the optimum-style KV-cache I/O
    (input_ids, attention_mask, past_key_values.* -> logits, present.*), so the plain engine runs it."""
    out = tmp_path_factory.mktemp("plain") / "plain"
    shutil.copytree(decoder_dir, out)
    desc = json.loads((out / "llmos_model.json").read_text())
    desc.update(format="onnx", name="plain")
    (out / "llmos_model.json").write_text(json.dumps(desc))
    return out


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., RuntimeConfig]:
    def make(models: list[dict[str, Any]], **kw: Any) -> RuntimeConfig:
        raw = {
            "host": "127.0.0.1",
            "port": 0,
            "audit_log": str(tmp_path / "audit.jsonl"),
            **kw,
            "models": [{**m, "path": str(m["path"])} for m in models],
        }
        return parse_config(raw, tmp_path)

    return make


@pytest.fixture
def start_server() -> Iterator[Callable[[RuntimeConfig], RunningServer]]:
    servers: list[RunningServer] = []

    def start(config: RuntimeConfig) -> RunningServer:
        servers.append(RunningServer(config).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def smollm2_dir(request: pytest.FixtureRequest) -> Path:
    """The real SmolLM2-135M-Instruct int4 onnx-genai model dir (slow tests only)."""
    return _shared_model(request, "smollm2_int4_dir", "LLMOS_TEST_SMOLLM2")
