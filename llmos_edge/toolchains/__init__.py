"""Isolated converter environments and the JSON contract used to call into them."""

from .contract import WORKERS_DIR, run_worker
from .manager import TOOLCHAINS, Toolchain, doctor, ensure, list_toolchains, resolve

__all__ = [
    "TOOLCHAINS",
    "WORKERS_DIR",
    "Toolchain",
    "doctor",
    "ensure",
    "list_toolchains",
    "resolve",
    "run_worker",
]
