"""Error bases for the files that also ship in bundles as the package `llmos_bridge`.

bridge.py, protocol.py and ports.py import their error types from here, not from llmos_edge.errors:
inside llmos_edge these are the project's own classes (so the CLI maps them to exit codes); in a
bundle, where llmos_edge does not exist, the stand-ins in _standalone_errors.py take their place.
"""

from __future__ import annotations

try:
    from ..errors import DeviceError, LlmosError
except ImportError:  # shipped as the top-level package llmos_bridge: no parent package to reach
    from ._standalone_errors import DeviceError, LlmosError  # type: ignore[assignment]

__all__ = ["DeviceError", "LlmosError"]
