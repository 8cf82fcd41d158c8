"""int8-decoder fixtures: a private stage cache per test (toolchains reused), the shared tiny Llama."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.toolchains import manager

_GRAPH_INFO = """
import json, sys, onnx
m = onnx.load(sys.argv[1], load_external_data=False)
attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
print(json.dumps({
    "ops": sorted({n.op_type for n in m.graph.node}),
    "initializers": {i.name: [list(i.dims), i.data_type] for i in m.graph.initializer},
    "nodes": {n.name: {"op": n.op_type, "inputs": list(n.input), **attrs(n)} for n in m.graph.node
              if n.op_type in ("Gather", "GatherBlockQuantized", "MatMulNBits", "Reshape")},
}))
"""


def graph_info(model_dir: Path) -> dict[str, Any]:
    """Ops, initializers and quantized nodes of model.onnx, read by the real onnx in the toolchain env
    (the main venv has no onnx package)."""
    tc = manager.ensure("onnx-genai", progress=False)
    out = subprocess.run(
        [str(tc.python), "-c", _GRAPH_INFO, str(model_dir / "model.onnx")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info


@pytest.fixture
def read_graph() -> Callable[[Path], dict[str, Any]]:
    """graph_info as a fixture (tests import nothing from conftest under --import-mode=importlib)."""
    return graph_info
