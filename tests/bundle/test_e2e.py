"""A real tiny decoder, bundled encrypted, run by the bundle's own runtime copy in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult, verify_bundle


@pytest.fixture(scope="session")
def decoder(request: pytest.FixtureRequest) -> Path:
    """Session scope: resolved before the per-test cache override, so the shared model cache is used."""
    try:
        return Path(request.getfixturevalue("tiny_decoder_dir"))
    except pytest.FixtureLookupError:
        if os.environ.get("LLMOS_TEST_TINY_DECODER"):
            return Path(os.environ["LLMOS_TEST_TINY_DECODER"])
        pytest.skip("needs the shared `tiny_decoder_dir` fixture (tests/conftest.py) "
                    "or $LLMOS_TEST_TINY_DECODER")


def _run(folder: Path, tmp_path: Path, key: Path | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(folder / "runtime"), "HOME": str(tmp_path)}
    if key:
        env["LLMOS_DEVICE_KEY"] = str(key)
    cmd = [sys.executable, "-m", "llmos_runtime", "run", "--config", str(folder / "config" / "runtime.json"),
           "--max-tokens", "8", "Hello"]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)


def _shm() -> set[Path]:
    return set(Path("/dev/shm").glob("llmos-model-*"))


def test_encrypted_bundle_runs_with_key_and_fails_without(
        build: Callable[..., BundleResult], decoder: Path, device_keys: tuple[Path, Path],
        signing_keys: tuple[Path, Path], tmp_path: Path) -> None:
    overrides = {"audit_log": str(tmp_path / "audit.jsonl")}
    plain = build("plain", model=decoder, target="host", config_overrides=overrides)
    sealed = build("sealed", model=decoder, target="host", config_overrides=overrides,
                   encrypt_for=device_keys[1])
    folder = verify_bundle(sealed.image, signing_keys[1]).folder  # the extracted, verified image
    before = _shm()

    expected = _run(plain.folder, tmp_path, None)
    assert expected.returncode == 0, expected.stderr
    got = _run(folder, tmp_path, device_keys[0])
    assert got.returncode == 0, got.stderr
    # the tiny model has random weights: its text is arbitrary (often whitespace) but deterministic
    assert got.stdout == expected.stdout and len(got.stdout) > 1
    assert _shm() <= before, "decrypted weights must be gone from tmpfs when the process exits"

    missing = _run(folder, tmp_path, None)
    assert missing.returncode != 0
    assert "LLMOS_DEVICE_KEY" in missing.stderr and "Traceback" not in missing.stderr


def test_bundled_smoke_script_runs_golden_prompts(build: Callable[..., BundleResult], decoder: Path,
                                                  tmp_path: Path) -> None:
    """smoke/smoke.py + golden.json (this area's files) against the bundled runtime's real smoke runner."""
    from llmos_edge.spec import Golden

    res = build(model=decoder, target="host", golden=(Golden(prompt="Hello", max_tokens=4),),
                config_overrides={"audit_log": str(tmp_path / "audit.jsonl"), "port": 0})
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    cmd = [sys.executable, str(res.folder / "smoke" / "smoke.py"), "--report", str(tmp_path / "report.json")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["limits"]["max_first_token_ms"] == 5000
    assert [r["name"] for r in report["results"]] == ["golden-1"]
    assert report["results"][0]["error"] is None, report
    assert proc.returncode == (0 if report["ok"] else 1), proc.stderr
