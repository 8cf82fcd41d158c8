"""`llmos-edge build` as typed (default key, default format) prints paths a user can copy: the
bundle, the image and the signing keys in full, even on a 40-column COLUMNS and through a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fixtures_models import tiny_llama_hf_dir

EVAL = "The quick brown fox jumps over the lazy dog. " * 20


def _field(stdout: str, name: str) -> str:
    for line in stdout.splitlines():
        if line.startswith(name + "  "):
            return line[len(name) :].strip()
    raise AssertionError(f"no {name!r} line in:\n{stdout}")


def test_build_prints_full_paths(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.toml").write_text(
        'schema_version = 1\ntask = "text-generation"\nparams_m = 0.2\ncontext_length = 128\n'
        f'evaluation_text = "{EVAL}"\n[source]\nkind = "local"\npath = "{tiny_llama_hf_dir()}"\n'
        "[quality]\nrequire_golden = false\nmax_perplexity_ratio = 1.5\n"
    )
    out = tmp_path / ("a-rather-long-folder-name-that-a-narrow-table-would-cut-" * 3) / "out"
    env = {
        **os.environ,
        "COLUMNS": "40",
        "LLMOS_EDGE_RECIPES_PATH": str(recipes),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    env.pop("LLMOS_EDGE_SIGNING_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "llmos_edge", "build", "--recipe", "tiny", "--no-wheels", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    bundle, image = Path(_field(proc.stdout, "bundle")), Path(_field(proc.stdout, "image"))
    key, pub = Path(_field(proc.stdout, "signing key")), Path(_field(proc.stdout, "public key"))
    assert bundle.is_dir() and bundle.parent == out.resolve()
    assert image.is_file() and image.parent == out.resolve()
    assert key == (tmp_path / "config" / "llmos-edge" / "signing.key").resolve() and key.is_file()
    assert pub.is_file() and pub.suffix == ".pub"
    verify = subprocess.run(
        [sys.executable, "-m", "llmos_edge", "verify", str(image), "--key", str(pub)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr + verify.stdout
