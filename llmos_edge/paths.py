"""Where llmos-edge keeps data: shipped definitions and the per-user cache."""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def cache_root() -> Path:
    """Stage cache, toolchains and downloaded models; LLMOS_EDGE_CACHE overrides."""
    env = os.environ.get("LLMOS_EDGE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmos-edge"


def shipped_dir(kind: str) -> Path:
    """targets/, recipes/ or firmware_templates/: from a source checkout or the wheel."""
    for candidate in (_PKG / "_data" / kind, _PKG.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"llmos-edge installation is missing its {kind}/ folder")


def search_dirs(kind: str) -> list[Path]:
    """User folders first (LLMOS_EDGE_TARGETS_PATH / LLMOS_EDGE_RECIPES_PATH), then shipped."""
    env = os.environ.get(f"LLMOS_EDGE_{kind.upper()}_PATH", "")
    dirs = [Path(p) for p in env.split(os.pathsep) if p]
    return [*dirs, shipped_dir(kind)]
