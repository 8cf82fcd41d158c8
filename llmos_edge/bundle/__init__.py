"""Device bundles: render, manifest, sign, pack reproducibly, verify, open safely, encrypt.

Public API (submodules load on first use so `import llmos_edge.bundle` stays cheap):
  make_bundle(spec: BundleSpec, out_dir: Path) -> BundleResult
  verify_bundle(path: Path, pubkey: Path | None, *, allow_unsigned: bool = False) -> Manifest
  open_bundle(path: Path) -> Path
  generate_keys(out_prefix: Path, *, device: bool = False, force: bool = False) -> tuple[Path, Path]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import make_bundle
    from .extract import open_bundle
    from .keys import generate_keys
    from .manifest import Manifest
    from .spec import BundleResult, BundleSpec
    from .verify import verify_bundle

_LAZY = {
    "make_bundle": "build",
    "verify_bundle": "verify",
    "open_bundle": "extract",
    "generate_keys": "keys",
    "Manifest": "manifest",
    "BundleSpec": "spec",
    "BundleResult": "spec",
}

__all__ = ["BundleResult", "BundleSpec", "Manifest", "generate_keys", "make_bundle", "open_bundle",
           "verify_bundle"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
