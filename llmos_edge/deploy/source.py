"""A verified bundle seen from the deploy side: its files keyed by content."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError


@dataclass(frozen=True)
class Blob:
    path: Path
    size: int


@dataclass(frozen=True)
class BundleSource:
    folder: Path
    manifest: dict[str, Any]
    manifest_text: str
    signature: str | None
    signed_by: str | None

    @property
    def version(self) -> str:
        return str(self.manifest["bundle_version"])

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", "bundle"))

    @property
    def target(self) -> str | None:
        t = self.manifest.get("target")
        return str(t) if t else None

    @property
    def platform(self) -> dict[str, Any]:
        p = self.manifest.get("platform") or {}
        return dict(p)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        files: dict[str, dict[str, Any]] = self.manifest["files"]
        return files

    def blobs(self) -> dict[str, Blob]:
        """One entry per distinct content (identical files are sent once)."""
        out: dict[str, Blob] = {}
        for rel, entry in sorted(self.files.items()):
            out.setdefault(entry["sha256"], Blob(self.folder / rel, int(entry["size"])))
        return out

    @property
    def total_bytes(self) -> int:
        return sum(b.size for b in self.blobs().values())

    def memory_budget_mb(self) -> int | None:
        cfg = self.folder / "config" / "runtime.json"
        try:
            value = json.loads(cfg.read_text()).get("memory_budget_mb")
        except (OSError, ValueError):
            return None
        return int(value) if isinstance(value, int | float) else None


def load_bundle(path: Path, pubkey: Path | None, *, allow_unsigned: bool) -> BundleSource:
    """Verify signature and every file (bundle.verify_bundle), then expose the signed manifest."""
    from ..bundle.verify import verify_bundle

    if not path.exists():
        raise UserError(
            f"bundle {path} does not exist", hints=["pass the folder or .tar.gz from `llmos-edge build`"]
        )
    manifest = verify_bundle(path, pubkey, allow_unsigned=allow_unsigned)
    folder = manifest.folder
    sig = folder / "manifest.sig"
    return BundleSource(
        folder=folder,
        manifest=manifest.raw,
        manifest_text=(folder / "manifest.json").read_text(),
        signature=sig.read_text() if manifest.signed_by and sig.is_file() else None,
        signed_by=manifest.signed_by,
    )
