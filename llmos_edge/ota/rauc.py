"""A signed RAUC bundle with the bundle image as the payload of one slot class, installed by our hook."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from ..device import pack
from ..device.protocol import RAUC_META  # read by the hook from the mounted (signed) bundle
from ..errors import UserError
from .payload import bundle_payload, require_tool, run_tool

RAUC_SLOT_CLASS = "llmos"  # the device's system.conf names a slot of this class for the app store
RAUC_HOOK = "llmos-hook"  # device/updater.py, packed: its `slot-install` front end installs through the agent
RAUC_FORMATS = ("verity", "plain")  # plain: for kernels without dm-verity (RAUC 1.8 still installs it)
_COMPATIBLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+ -]*$")


def export_rauc(bundle_dir: Path, out: Path, compatible: str, cert: Path, key: Path, *,
                bundle_format: str = "verity") -> Path:
    """Write `out` (.raucb) signed with cert/key; `compatible` must equal the device's system.conf."""
    tool = require_tool("rauc", "rauc squashfs-tools")
    require_tool("mksquashfs", "squashfs-tools")
    if not _COMPATIBLE_RE.fullmatch(compatible):
        raise UserError(f"invalid RAUC compatible string {compatible!r}",
                        hints=["use the `compatible=` value from the device's /etc/rauc/system.conf"])
    if bundle_format not in RAUC_FORMATS:
        raise UserError(f"unknown RAUC bundle format {bundle_format!r}", hints=[f"one of {RAUC_FORMATS}"])
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
        # The hook (stdlib python3) runs from the mounted bundle; the manifest hash it checks is signed.
        (content / RAUC_HOOK).write_bytes(pack.updater_script())
        (content / RAUC_HOOK).chmod(0o755)
        (content / RAUC_META).write_text(json.dumps({"manifest_sha256": p.manifest_sha256}) + "\n")
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible={compatible}\nversion={p.version}\n"
            f"description=llmos-edge bundle {p.name} for {p.target} (manifest {p.manifest_sha256})\n\n"
            f"[bundle]\nformat={bundle_format}\n\n[hooks]\nfilename={RAUC_HOOK}\n\n"
            f"[image.{RAUC_SLOT_CLASS}]\nfilename={p.image.name}\nhooks=install\n")
        partial = work / out.name
        run_tool([tool, "bundle", f"--cert={cert}", f"--key={key}", content, partial], "rauc bundle")
        partial.replace(out)
    return out
