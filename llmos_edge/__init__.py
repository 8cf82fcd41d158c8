"""llmos-edge: a model + a target profile -> a signed device bundle, shipped and kept running.

The library API that the CLI is a thin layer over; CI scripts can call it directly:

    import llmos_edge
    plan = llmos_edge.plan("rpi5", "smollm2-135m-instruct")
    result = llmos_edge.build("rpi5", "smollm2-135m-instruct", out=Path("build/rpi5"))
    llmos_edge.verify_bundle(result.image, pubkey)

Names are imported lazily so that `import llmos_edge` stays cheap for deploy-only users.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "plan": "llmos_edge.pipeline:plan",
    "build": "llmos_edge.pipeline:build",
    "BuildResult": "llmos_edge.pipeline:BuildResult",
    "load_target": "llmos_edge.spec:load_target",
    "load_recipe": "llmos_edge.spec:load_recipe",
    "list_targets": "llmos_edge.spec:list_targets",
    "list_recipes": "llmos_edge.spec:list_recipes",
    "make_plan": "llmos_edge.plan:make_plan",
    "make_bundle": "llmos_edge.bundle:make_bundle",
    "verify_bundle": "llmos_edge.bundle:verify_bundle",
    "open_bundle": "llmos_edge.bundle:open_bundle",
    "generate_keys": "llmos_edge.bundle:generate_keys",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'llmos_edge' has no attribute {name!r}")
    module, attr = _LAZY[name].split(":")
    return getattr(importlib.import_module(module), attr)
