"""The Must-show of the build: the embedded default for rpi5 through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_rpi5_default_build_answers_paris(tmp_path: Path) -> None:
    out = tmp_path / "rpi5"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmos_edge",
            "build",
            "--target",
            "rpi5",
            "--no-wheels",
            "--json",
            "--out",
            str(out),
            "--prompt",
            "What is the capital of France?",
        ],
        capture_output=True,
        text=True,
        timeout=3000,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert "paris" in data["answer"].lower()
    quality = data["model"]["quality"]
    golden = quality["golden"][0]
    assert golden["passed"] and golden["stopped_at_end_of_turn"], golden
    assert quality["reference_perplexity"] > 0 and quality["perplexity"] > 0
    files = [p for p in out.glob("*/models/*/*") if p.is_file()]
    weights = sum(p.stat().st_size for p in files if p.name.startswith("model.onnx"))
    whole = sum(p.stat().st_size for p in files)
    assert (tmp_path / "config" / "llmos-edge" / "signing.key").is_file(), "first build makes a signing key"
    assert weights <= 100e6, f"int4 ONNX model is {weights / 1e6:.1f} MB"
    assert whole <= 100 * 2**20, f"model folder with tokenizer is {whole / 2**20:.1f} MiB"
    assert data["plan"]["quant"] == "int4" and data["plan"]["target"] == "rpi5"
