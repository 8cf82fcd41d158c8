"""Export a bundle for existing OTA servers: a Mender artifact and a RAUC bundle.

Public API:
  export_mender(bundle_dir: Path, out: Path, device_types: Sequence[str], *, signing_key=None) -> Path
  export_rauc(bundle_dir: Path, out: Path, compatible: str, cert: Path, key: Path) -> Path
Both wrap the bundle's reproducible image unchanged, so the device-side agent still verifies the
llmos manifest signature after the OTA client hands the payload over.
"""

from __future__ import annotations

from .mender import MENDER_TYPE, export_mender
from .rauc import RAUC_SLOT_CLASS, export_rauc

__all__ = ["MENDER_TYPE", "RAUC_SLOT_CLASS", "export_mender", "export_rauc"]
