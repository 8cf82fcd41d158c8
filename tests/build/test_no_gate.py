"""A recipe with nothing to evaluate builds only with an explicit --no-gate, and the report says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_edge.build_model import build_model
from llmos_edge.errors import UserError
from llmos_edge.plan import make_plan
from llmos_edge.spec import load_target
from llmos_edge.spec.models import Recipe


def _recipe(hf: Path) -> Recipe:
    return Recipe.model_validate(
        {
            "schema_version": 1,
            "name": "tiny-unchecked",
            "task": "text-generation",
            "source": {"kind": "local", "path": str(hf)},
            "context_length": 128,
        }
    )


def test_nothing_to_evaluate_is_refused_before_any_export(private_cache: Path, tiny_llama_hf: Path) -> None:
    plan = make_plan(load_target("host"), _recipe(tiny_llama_hf), quant="fp32")
    with pytest.raises(UserError) as err:
        build_model(plan, progress=False)
    assert err.value.exit_code == 2 and "nothing to check" in err.value.message
    assert any("--no-gate" in h for h in err.value.hints)
    assert not (private_cache / "stages").exists() or not any((private_cache / "stages").rglob("*.json"))


def test_no_gate_builds_and_the_report_says_so(private_cache: Path, tiny_llama_hf: Path) -> None:
    plan = make_plan(load_target("host"), _recipe(tiny_llama_hf), quant="fp32")
    built = build_model(plan, progress=False, no_gate=True)
    quality = built.report["quality"]
    assert quality["gate"] == "off (--no-gate)" and "gate off (--no-gate)" in quality["verdict"]
    assert quality["perplexity"] is None and quality["golden"] == []
    desc = json.loads((built.model_dir / "llmos_model.json").read_text())
    assert desc["prompt_format"] == "chat"  # the fixture's own ChatML template (auto)


def test_cli_as_typed_refuses_with_the_hint(tmp_path: Path, tiny_llama_hf: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "unchecked.toml").write_text(
        'schema_version = 1\ntask = "text-generation"\nparams_m = 0.2\ncontext_length = 128\n'
        f'[source]\nkind = "local"\npath = "{tiny_llama_hf}"\n'
    )
    env = {**os.environ, "LLMOS_EDGE_RECIPES_PATH": str(recipes), "LLMOS_EDGE_CACHE": str(tmp_path / "c")}
    proc = subprocess.run(
        [sys.executable, "-m", "llmos_edge", "build", "--recipe", "unchecked", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--no-gate" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
