"""A Mender update-module artifact (type `llmos-bundle`) carrying the bundle image."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_write_text
from .payload import bundle_payload, require_tool, run_tool

MENDER_TYPE = "llmos-bundle"  # the update module on the device: calls `llmos-agent install`
_DEVTYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def export_mender(bundle_dir: Path, out: Path, device_types: Sequence[str], *,
                  signing_key: Path | None = None) -> Path:
    """Write `out` (.mender); device_types become Mender's compatibility list. Returns `out`."""
    tool = require_tool("mender-artifact", "mender-artifact")
    if not device_types or any(not _DEVTYPE_RE.fullmatch(d) for d in device_types):
        raise UserError(f"invalid Mender device types {list(device_types)!r}",
                        hints=["pass at least one, e.g. raspberrypi5 (letters, digits, . _ + -)"])
    if signing_key is not None and not signing_key.is_file():
        raise UserError(f"Mender signing key {signing_key} does not exist",
                        hints=["mender-artifact takes an RSA (PKCS#1) or EC (SEC1) PEM private key"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mender-", dir=out.parent) as tmp:
        work = Path(tmp)
        p = bundle_payload(bundle_dir, work)
        meta = work / "meta-data.json"
        atomic_write_text(meta, json.dumps({"name": p.name, "version": p.version, "target": p.target,
                                            "manifest_sha256": p.manifest_sha256}, sort_keys=True))
        partial = work / out.name
        cmd: list[str | Path] = [tool, "write", "module-image", "-T", MENDER_TYPE,
                                 "-n", f"{p.name}-{p.version}", "-o", partial, "-f", p.image, "-m", meta,
                                 "--software-name", p.name, "--software-version", p.version,
                                 "--provides", f"llmos.bundle.manifest_sha256:{p.manifest_sha256}"]
        for dt in device_types:
            cmd += ["-t", dt]
        if signing_key is not None:
            cmd += ["-k", signing_key]
        run_tool(cmd, "mender-artifact write")
        partial.replace(out)
    return out
