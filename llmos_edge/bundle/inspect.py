"""Read a bundle's manifest for display, without trusting it (that is verify's job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckFailed
from . import manifest as mf
from .extract import is_image, open_bundle, read_head


def read_manifest(path: Path) -> dict[str, Any]:
    if is_image(path):  # only the manifest is read from the stream; nothing is extracted
        return mf.parse(read_head(path).manifest, path / mf.MANIFEST)
    folder = open_bundle(path)
    man = folder / mf.MANIFEST
    if not man.is_file():
        raise CheckFailed(f"{path} has no {mf.MANIFEST}; it is not an llmos-edge bundle")
    return mf.parse(man.read_bytes(), man)


def summary_lines(raw: dict[str, Any]) -> list[str]:
    files = raw["files"]
    total = sum(int(e["size"]) for e in files.values())
    signing = raw.get("signing") or {}
    enc = raw.get("encrypted")
    wheels = raw.get("wheels")
    plat = raw.get("platform") or {}
    lines = [
        f"bundle   {raw.get('name')} {raw.get('bundle_version')} (created {raw.get('created')})",
        f"target   {raw.get('target')} [{plat.get('arch')}, {plat.get('libc')}, python {plat.get('python')}]",
        f"recipe   {raw.get('recipe')}; source sha256 {str(raw.get('source_model_sha256'))[:16]}",
        f"models   {', '.join(raw.get('models') or [])}",
        f"files    {len(files)}, {total / 1e6:.1f} MB",
        f"signed   {'ed25519 key ' + str(signing.get('key_id'))[:16] if signing else 'NO (unsigned)'}",
        f"wheels   {len(wheels['files']) if wheels else 'none (--no-wheels)'}",
        f"encrypted {'for device key ' + str(enc['device_key_id'])[:16] if enc else 'no'}",
    ]
    quality = raw.get("quality_report") or {}
    if quality:
        lines.append("quality  " + ", ".join(f"{k}={v}" for k, v in sorted(quality.items())
                                             if not isinstance(v, (dict, list))))
    lines.append("(not verified: run `llmos-edge verify BUNDLE --key PUB`)")
    return lines
