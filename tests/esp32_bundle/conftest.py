"""Fixtures for the host half of an esp32s3-host-offload bundle.

The C harness (gcc), the socat pty pairs and their helpers are the ESP32 tests' own, imported here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult, BundleSpec, generate_keys, make_bundle
from llmos_edge.esp32.hostpkg import host_bundle_target
from llmos_edge.spec import Golden, load_target

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: reach tests/esp32's helpers
from tests.esp32.conftest import PtyPair, harness_bin, make_pty  # noqa: F401  (fixtures, re-used)

TARGET = "esp32s3-host-offload"


@pytest.fixture(autouse=True)
def _own_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-test cache and lock folders, so parallel sessions never share them."""
    monkeypatch.setenv("LLMOS_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMOS_EDGE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def host_spec(model: Path, key: Path | None, **kw: object) -> BundleSpec:
    """The spec build.py makes for the esp32 target: the host profile, named after the esp32 target."""
    base: dict[str, object] = {
        "target": host_bundle_target(load_target(TARGET)), "recipe": "tiny-recipe", "version": "1.0.0",
        "models": {"tiny": model}, "signing_key": key, "wheels": False,
        "golden": (Golden(prompt="hi", expect_contains=(), max_tokens=8),),
    }
    base.update(kw)
    return BundleSpec(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys") / "signing")


@pytest.fixture(scope="module")
def host_bundle(tiny_decoder_dir: Path, signing_keys: tuple[Path, Path],
                tmp_path_factory: pytest.TempPathFactory) -> BundleResult:
    """A signed host bundle of the tiny real decoder; the runtime's audit log goes to a temp file."""
    out = tmp_path_factory.mktemp("bundle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMOS_EDGE_CACHE", str(out / "cache"))
        mp.delenv("SOURCE_DATE_EPOCH", raising=False)
        spec = host_spec(tiny_decoder_dir, signing_keys[0],
                         config_overrides={"audit_log": str(out / "requests.jsonl")})
        return make_bundle(spec, out)


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only pyserial (copied from here): what a host with just the bundle's wheels has.

    No llmos_edge, no site-packages of this project: the bridge must run from the bundle alone.
    """
    import serial

    venv = tmp_path_factory.mktemp("hostpy") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    shutil.copytree(Path(serial.__file__).parent, site / "serial",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a systemd service would see: no PYTHONPATH, no project paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "LLMOS_PYTHON", "LLMOS_VENV")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; all stopped at teardown, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            stop(p)
