"""Smoke runner and CLIs as real processes: `python -m llmos_edge.runtime`, `python -m llmos_edge`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .rt_helpers import chat, http, seal

PY = sys.executable


@pytest.fixture(autouse=True)
def _default_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Bundles here are signed with the user's default key, so `serve/run/smoke B` verify as typed."""
    from llmos_edge.bundle.keyplace import default_signing_key

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LLMOS_EDGE_SIGNING_KEY", raising=False)
    return default_signing_key()


def _bundle(root: Path, decoder_dir: Path, golden: dict[str, Any]) -> Path:
    """A bundle-shaped folder: config/runtime.json, models/<id>/, smoke/golden.json."""
    shutil.copytree(decoder_dir, root / "models" / "dec")
    (root / "config").mkdir(parents=True)
    (root / "config" / "runtime.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": 0,
                "memory_budget_mb": 1024,
                "audit_log": "../state/audit.jsonl",
                "models": [{"id": "dec", "path": "../models/dec", "max_concurrency": 1, "max_queue": 4}],
            }
        )
    )
    (root / "smoke").mkdir()
    (root / "smoke" / "golden.json").write_text(json.dumps(golden))
    from llmos_edge.bundle.keyplace import default_signing_key

    return seal(root, default_signing_key())


GOOD = {
    "model": "dec",
    "limits": {"max_first_token_ms": 30000, "min_tokens_per_s": 1},
    "prompts": [
        {
            "name": "any",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 16,
            "expect_contains": [],
        },
        {"name": "raw", "prompt": "The capital", "max_tokens": 8},
    ],
}


def _run(args: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([PY, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def _device_smoke(b: Path, rep: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cfg, golden = str(b / "config/runtime.json"), str(b / "smoke/golden.json")
    args = ["-m", "llmos_edge.runtime", "smoke", "--config", cfg, "--golden", golden, "--report", str(rep)]
    return _run([*args, *extra])


def test_device_smoke_passes_and_writes_report(decoder_dir: Path, tmp_path: Path) -> None:
    b = _bundle(tmp_path / "b", decoder_dir, GOOD)
    rep = tmp_path / "out" / "report.json"
    p = _device_smoke(b, rep)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(rep.read_text())
    assert report["ok"] is True and len(report["results"]) == 2
    summary = report["summary"]
    # the decode rate is n/a when the (trained, terse) tiny model answers in one piece; the whole-request
    # rate, a lower bound of it, is always measured
    assert summary["first_token_ms_median"] > 0 and summary["request_tokens_per_s_median"] > 1
    assert summary["tokens_per_s_median"] is None or summary["tokens_per_s_median"] > 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {
                "prompts": [
                    {"messages": [{"role": "user", "content": "Hi"}], "expect_contains": ["zz-never-zz"]}
                ]
            },
            "zz-never-zz",
        ),
        ({"limits": {"min_tokens_per_s": 1e9}}, "tokens/s"),
        ({"limits": {"max_first_token_ms": 0.0001}}, "first-token"),
    ],
)
def test_device_smoke_fails_nonzero(
    decoder_dir: Path, tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    b = _bundle(tmp_path / "b", decoder_dir, {**GOOD, **change})
    rep = tmp_path / "r.json"
    p = _device_smoke(b, rep)
    assert p.returncode == 1, p.stdout + p.stderr
    assert json.loads(rep.read_text())["ok"] is False and reason in rep.read_text()


def test_latency_scale_moves_only_the_timing_budget(decoder_dir: Path, tmp_path: Path) -> None:
    """A QEMU stand-in gets first-token x N and tokens/s / N; a wrong answer still fails."""
    tight = {**GOOD, "limits": {"max_first_token_ms": 0.01, "min_tokens_per_s": 1e6}}
    b = _bundle(tmp_path / "b", decoder_dir, tight)
    assert _device_smoke(b, tmp_path / "r1.json").returncode == 1
    p = _device_smoke(b, tmp_path / "r2.json", "--latency-scale", "1e9")
    assert p.returncode == 0, p.stdout + p.stderr
    limits = json.loads((tmp_path / "r2.json").read_text())["limits"]
    assert limits["latency_scale"] == 1e9 and limits["max_first_token_ms"] == pytest.approx(1e7)
    assert limits["min_tokens_per_s"] == pytest.approx(1e-3)
    wrong = {**tight, "prompts": [{"prompt": "Hi", "max_tokens": 4, "expect_contains": ["zz-never-zz"]}]}
    w = _bundle(tmp_path / "w", decoder_dir, wrong)
    p = _device_smoke(w, tmp_path / "r3.json", "--latency-scale", "1e9")
    assert p.returncode == 1 and "zz-never-zz" in (tmp_path / "r3.json").read_text()
    bad = _device_smoke(b, tmp_path / "r4.json", "--latency-scale", "0")
    assert bad.returncode != 0 and "latency scale must be > 0" in bad.stdout + bad.stderr


def test_cli_smoke_exit_4_on_failure_and_0_on_success(decoder_dir: Path, tmp_path: Path) -> None:
    good = _bundle(tmp_path / "good", decoder_dir, GOOD)
    assert _run(["-m", "llmos_edge", "smoke", str(good)]).returncode == 0
    bad = _bundle(tmp_path / "bad", decoder_dir, {**GOOD, "limits": {"min_tokens_per_s": 1e9}})
    p = _run(["-m", "llmos_edge", "smoke", str(bad), "--report", str(tmp_path / "r.json")])
    assert p.returncode == 4 and "smoke failed" in p.stderr and (tmp_path / "r.json").exists()


def test_cli_run_streams_and_json(decoder_dir: Path, tmp_path: Path) -> None:
    p = _run(["-m", "llmos_edge", "run", str(decoder_dir), "Hello", "--max-tokens", "8", "--json"])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["completion_tokens"] <= 8 and out["prompt_tokens"] > 0 and isinstance(out["text"], str)
    plain = _run(["-m", "llmos_edge", "run", str(decoder_dir), "Hello", "--max-tokens", "8"])
    assert plain.returncode == 0 and plain.stdout == out["text"] + "\n"
    b = _bundle(tmp_path / "b", decoder_dir, GOOD)
    assert _run(["-m", "llmos_edge", "run", str(b), "Hello", "--max-tokens", "8"]).stdout == plain.stdout


def test_cli_run_user_errors_exit_2(decoder_dir: Path, tmp_path: Path) -> None:
    p = _run(["-m", "llmos_edge", "run", str(tmp_path), "Hello"])
    assert p.returncode == 2 and "neither a bundle" in p.stderr and "Traceback" not in p.stderr
    p = _run(["-m", "llmos_edge", "run", str(decoder_dir), "Hello", "--model", "nope"])
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr


def test_device_serve_process_and_sigterm(decoder_dir: Path, tmp_path: Path) -> None:
    b = _bundle(tmp_path / "b", decoder_dir, GOOD)
    proc = subprocess.Popen(
        [PY, "-m", "llmos_edge.runtime", "serve", "--config", str(b / "config/runtime.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url, line + (proc.stderr.read() if proc.stderr else "")
        r = http("POST", url.group() + "/v1/chat/completions", chat("dec", max_tokens=4))
        assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        time.sleep(0.05)
        assert (b / "state" / "audit.jsonl").read_text().count("\n") >= 1  # relative audit path resolved
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serve_several_model_dirs(decoder_dir: Path, encoder_dir: Path, tmp_path: Path) -> None:
    """`llmos-edge serve A B` puts both models behind one API."""
    cmd = [
        PY,
        "-m",
        "llmos_edge",
        "serve",
        str(decoder_dir),
        str(encoder_dir),
        "--port",
        "0",
        "--audit-log",
        str(tmp_path / "audit.jsonl"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url, line + (proc.stderr.read() if proc.stderr else "")
        ids = [m["id"] for m in http("GET", url.group() + "/v1/models").json()["data"]]
        assert len(ids) == 2
        emb = http("POST", url.group() + "/v1/embeddings", {"model": ids[1], "input": "hi"})
        assert emb.status == 200, emb.body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_runs_as_top_level_llmos_runtime_without_llmos_edge(decoder_dir: Path, tmp_path: Path) -> None:
    """Bundles ship this package as `llmos_runtime`: it must work with llmos_edge unimportable."""
    import llmos_edge.runtime as rt

    shutil.copytree(
        Path(rt.__file__).parent,
        tmp_path / "site" / "llmos_runtime",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    b = _bundle(tmp_path / "b", decoder_dir, GOOD)
    code = (
        "import sys, runpy; sys.modules['llmos_edge'] = None; "
        "runpy.run_module('llmos_runtime', run_name='__main__', alter_sys=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    p = subprocess.run(
        [
            PY,
            "-c",
            code,
            "smoke",
            "--config",
            str(b / "config/runtime.json"),
            "--golden",
            str(b / "smoke/golden.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["ok"] is True


def test_cli_run_accepts_a_bundle_image(decoder_dir: Path, tmp_path: Path) -> None:
    """A .tar.gz bundle image is opened through llmos_edge.bundle.open_bundle (safe extraction)."""
    import tarfile

    pytest.importorskip("llmos_edge.bundle.extract", reason="bundle extraction module not present")
    b = _bundle(tmp_path / "b", decoder_dir, GOOD)
    image = tmp_path / "tiny-1.0.0.tar.gz"
    with tarfile.open(image, "w:gz") as tar:
        for f in sorted(b.rglob("*")):
            tar.add(f, arcname=f.relative_to(b).as_posix(), recursive=False)
    env_cache = {"LLMOS_EDGE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [PY, "-m", "llmos_edge", "run", str(image), "Hello", "--max-tokens", "6", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env_cache},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["completion_tokens"] <= 6


def test_cli_smoke_prints_failing_answers_and_json(decoder_dir: Path, tmp_path: Path) -> None:
    """The summary names each failing prompt with its answer (never `failures: []` with exit 4)."""
    wrong = {
        "model": "dec",
        "prompts": [
            {"name": "fine", "prompt": "The capital", "max_tokens": 4},
            {"name": "wrong", "prompt": "The capital", "max_tokens": 4, "expect_contains": ["zz-never-zz"]},
        ],
    }
    b = _bundle(tmp_path / "w", decoder_dir, wrong)
    p = _run(["-m", "llmos_edge", "smoke", str(b)])
    assert p.returncode == 4, p.stdout + p.stderr
    assert "smoke FAILED: 1/2 checks passed" in p.stdout and "FAIL wrong [completion]: answer '" in p.stdout
    assert "wrong: answer lacks 'zz-never-zz'" in p.stdout and "zz-never-zz" in p.stderr
    j = _run(["-m", "llmos_edge", "smoke", str(b), "--json"])
    assert j.returncode == 4
    report = json.loads(j.stdout)  # the whole report, parseable, like the other commands' --json
    assert report["ok"] is False and [r["ok"] for r in report["results"]] == [True, False]
    assert len(report["summary"]["failures"]) == 1 and "zz-never-zz" in report["summary"]["failures"][0]
    assert report["results"][1]["text"] in report["summary"]["failures"][0]


def test_throughput_is_na_not_a_fake_number(decoder_dir: Path, tmp_path: Path) -> None:
    """One generated token gives no decode rate: reported n/a (null). The floor is then checked on the
    whole-request rate (a lower bound): a reachable floor passes and says so, an unreachable one fails."""
    def one(floor: float) -> dict[str, object]:
        return {"model": "dec", "limits": {"max_first_token_ms": 60000, "min_tokens_per_s": floor},
                "prompts": [{"name": "one", "prompt": "The capital", "max_tokens": 1}]}

    b = _bundle(tmp_path / "one", decoder_dir, one(1))
    p = _run(["-m", "llmos_edge", "smoke", str(b), "--json"])
    report = json.loads(p.stdout)
    assert report["results"][0]["tokens_per_s"] is None and report["summary"]["tokens_per_s_median"] is None
    bound = report["results"][0]["request_tokens_per_s"]
    assert p.returncode == 0 and 1 <= bound < 1e6, report
    assert "lower bound" in report["summary"]["tokens_per_s_note"]
    text = _run(["-m", "llmos_edge", "smoke", str(b)]).stdout
    assert "decode n/a (median)" in text

    b = _bundle(tmp_path / "fast", decoder_dir, one(1e9))
    p = _run(["-m", "llmos_edge", "smoke", str(b), "--json"])
    report = json.loads(p.stdout)
    assert p.returncode == 4 and "decode tokens/s n/a" in report["summary"]["failures"][0]
    assert "does not clear the 1000000000.0 tokens/s floor" in report["summary"]["failures"][0]


def test_rate_guards() -> None:
    from llmos_edge.runtime.client import StreamOutcome
    from llmos_edge.runtime.textgen import GenResult

    one_chunk = StreamOutcome(
        text="abc", first_token_s=0.5, total_s=0.5000001, completion_tokens=9, chunks=["abc"]
    )
    assert one_chunk.decode_tokens_per_s() is None  # 9 tokens read at once: no rate
    instant = StreamOutcome(first_token_s=0.5, total_s=0.5, completion_tokens=9, chunks=["a", "b"])
    assert instant.decode_tokens_per_s() is None
    real = StreamOutcome(first_token_s=0.5, total_s=1.5, completion_tokens=11, chunks=["a", "b"])
    assert real.decode_tokens_per_s() == pytest.approx(10.0)
    g = GenResult(completion_tokens=1, first_token_s=0.1, started=0.0, ended=5.0)
    assert g.decode_tokens_per_s() is None
    g = GenResult(completion_tokens=50, first_token_s=0.1, started=0.0, ended=0.1)
    assert g.decode_tokens_per_s() is None
