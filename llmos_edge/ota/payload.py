"""What both OTA formats carry: the bundle's reproducible image plus a few manifest facts."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckFailed, UserError


@dataclass(frozen=True)
class Payload:
    image: Path  # <name>-<version>.tar.gz, byte-identical to the one the bundler wrote
    name: str
    version: str
    target: str
    manifest_sha256: str


def bundle_payload(bundle: Path, workdir: Path) -> Payload:
    """Accept a bundle folder or its .tar.gz; reuse the image beside a folder or pack one reproducibly."""
    import hashlib

    from ..bundle.extract import is_image, open_bundle
    from ..bundle.image import write_image
    from ..bundle.manifest import MANIFEST
    from ..bundle.manifest import parse as parse_manifest

    folder = open_bundle(bundle)
    try:
        raw = (folder / MANIFEST).read_bytes()
        manifest = parse_manifest(raw, folder / MANIFEST)  # size and nesting limits: CheckFailed
        name, version = str(manifest["name"]), str(manifest["bundle_version"])
    except (OSError, KeyError) as exc:
        raise UserError(f"{bundle} has no readable manifest.json ({exc})",
                        hints=["pass the folder or .tar.gz that `llmos-edge build` wrote"]) from exc
    stem = f"{name}-{version}"
    if is_image(bundle):
        image = bundle
    elif (bundle.parent / f"{stem}.tar.gz").is_file():
        image = bundle.parent / f"{stem}.tar.gz"
    else:
        image = workdir / f"{stem}.tar.gz"
        write_image(folder, image, _epoch(manifest.get("created")))
    return Payload(image, name, version, str(manifest.get("target", "")), hashlib.sha256(raw).hexdigest())


def _epoch(created: object) -> int:
    from datetime import datetime

    try:
        return int(datetime.strptime(str(created), "%Y-%m-%dT%H:%M:%S%z").timestamp())
    except ValueError:
        return 0


def require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"`{tool}` is not installed; it is needed to write this OTA format",
                        hints=[f"apt-get install -y {package}", "or export only the formats you need"])
    return path


def run_tool(cmd: Sequence[str | Path], what: str, timeout: float = 600) -> str:
    """Run an OTA tool (argv, no shell); its refusal becomes CheckFailed with the tool's own words."""
    args = [str(c) for c in cmd]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise CheckFailed(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}",
                          hints=["check the key/certificate paths and that the bundle verifies"])
    return proc.stdout + proc.stderr
