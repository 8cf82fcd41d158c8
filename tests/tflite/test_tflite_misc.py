"""The rpi5-litert target, the tensorflow-schema shim the toolchain relies on, and stage refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmos_edge.errors import UserError
from llmos_edge.plan import make_plan
from llmos_edge.spec.loader import load_recipe, load_target
from llmos_edge.stages import tflite
from llmos_edge.toolchains import WORKERS_DIR, manager


def test_rpi5_litert_target() -> None:
    t = load_target("rpi5-litert")
    assert (t.model.formats, t.model.default_format, t.model.default_quant) == (("tflite",), "tflite", "int8")
    assert t.execution_providers == ("XnnpackExecutionProvider", "CPUExecutionProvider")
    base = load_target("rpi5")
    assert (t.platform, t.budgets, t.service) == (base.platform, base.budgets, base.service)


@pytest.mark.parametrize("recipe", ["smollm2-135m-instruct", "all-minilm-l6-v2"])
def test_plans_pick_the_tflite_toolchain(recipe: str) -> None:
    plan = make_plan(load_target("rpi5-litert"), load_recipe(recipe))
    assert (plan.format, plan.quant, plan.toolchain) == ("tflite", "int8", "tflite")


def test_any_target_may_choose_tflite() -> None:
    plan = make_plan(load_target("host"), load_recipe("smollm2-135m-instruct"), format="tflite", quant="int8")
    assert plan.format == "tflite" and plan.toolchain == "tflite"


def test_toolchain_is_registered_and_locked() -> None:
    tc = manager.resolve("tflite")
    for pkg, ver in {"torch": "2.13.0+cpu", "litert-torch": "0.10.0", "transformers": "5.23.0"}.items():
        assert tc.packages[pkg] == ver
    assert "ai-edge-quantizer" in tc.packages and "gguf" in tc.packages and "accelerate" in tc.packages
    assert "tensorflow" not in tc.packages and "tensorflow-cpu" not in tc.packages  # the shim replaces it


def test_tensorflow_schema_shim() -> None:
    """litert-torch's `from tensorflow.lite.python import schema_py_generated` works without tensorflow."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from tflite_common import install_tf_schema_shim\n"
        "print(install_tf_schema_shim())\n"
        "from tensorflow.lite.python import schema_py_generated as s\n"
        "import ai_edge_litert.schema_py_generated as a\n"
        "print(s is a, s.BuiltinOperator.STABLEHLO_COMPOSITE > 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(WORKERS_DIR)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["ai_edge_litert shim", "True True"]


@pytest.mark.parametrize("quant", ["fp16", "int2"])
def test_unavailable_quant_is_refused(quant: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not available for format tflite") as err:
        tflite.check_quant(quant)
    assert "int8 is the default" in err.value.hints[0]


def test_int4_encoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="int4 is not offered for TFLite encoders"):
        tflite.export_encoder(
            manager.resolve("tflite"), tmp_path, tmp_path / "o", name="x", quant="int4", seq_len=16
        )
