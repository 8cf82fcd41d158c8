"""A signed RAUC bundle (verity format) with the bundle image as the payload of one slot class."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError
from .payload import bundle_payload, require_tool, run_tool

RAUC_SLOT_CLASS = "llmos"  # the device's system.conf names a slot of this class for the app store
_COMPATIBLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+ -]*$")


def export_rauc(bundle_dir: Path, out: Path, compatible: str, cert: Path, key: Path) -> Path:
    """Write `out` (.raucb) signed with cert/key; `compatible` must equal the device's system.conf."""
    tool = require_tool("rauc", "rauc squashfs-tools")
    require_tool("mksquashfs", "squashfs-tools")
    if not _COMPATIBLE_RE.match(compatible):
        raise UserError(f"invalid RAUC compatible string {compatible!r}",
                        hints=["use the `compatible=` value from the device's /etc/rauc/system.conf"])
    for path, what in ((cert, "certificate"), (key, "private key")):
        if not path.is_file():
            raise UserError(f"RAUC signing {what} {path} does not exist",
                            hints=["RAUC signs with an X.509 certificate and its PEM key (CMS)"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rauc-", dir=out.parent) as tmp:
        work = Path(tmp)
        p = bundle_payload(bundle_dir, work / "scratch")
        content = work / "content"
        content.mkdir()
        shutil.copyfile(p.image, content / p.image.name)
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible={compatible}\nversion={p.version}\n"
            f"description=llmos-edge bundle {p.name} for {p.target} (manifest {p.manifest_sha256})\n\n"
            f"[bundle]\nformat=verity\n\n[image.{RAUC_SLOT_CLASS}]\nfilename={p.image.name}\n")
        partial = work / out.name
        run_tool([tool, "bundle", f"--cert={cert}", f"--key={key}", content, partial], "rauc bundle")
        partial.replace(out)
    return out
