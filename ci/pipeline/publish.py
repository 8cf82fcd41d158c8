"""A release-server directory: static files any HTTP server (nginx, S3, GitHub Pages) can serve.

  <out>/index.json                                  every published image (sorted), the entry point
  <out>/SHA256SUMS                                  `sha256sum -c` compatible
  <out>/images/<name>/latest.json                   newest version of that image
  <out>/images/<name>/<version>/<name>-<version>.tar.gz
                               .../manifest.json manifest.sig        (check before downloading)
                               .../<image>.sbom.json  <image>.provenance.json  <image>.provenance.sig
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_edge.errors import UserError
from llmos_edge.fsutil import atomic_dir, atomic_write_bytes, atomic_write_text, sha256_file

from .provenance import dump


@dataclass(frozen=True)
class Release:
    """One image ready to publish: its file, its bundle folder and the documents about it."""

    image: Path
    folder: Path
    manifest: dict[str, Any]
    sbom: dict[str, Any]
    provenance: dict[str, Any]
    provenance_sig: bytes | None


def publish(out: Path, rel: Release) -> dict[str, Any]:
    """Write one image's folder atomically, then update latest.json, index.json and SHA256SUMS."""
    name, version = rel.manifest["name"], rel.manifest["bundle_version"]
    base = out / "images" / name
    dest = base / version
    if dest.exists() and (dest / rel.image.name).exists() and sha256_file(dest / rel.image.name) != \
            sha256_file(rel.image):
        raise UserError(f"{name} {version} is already published with different bytes",
                        hints=["bump `version` in the matrix file; a published version never changes"])
    with atomic_dir(dest) as tmp:
        shutil.copyfile(rel.image, tmp / rel.image.name)
        for meta in ("manifest.json", "manifest.sig"):
            if (rel.folder / meta).is_file():
                shutil.copyfile(rel.folder / meta, tmp / meta)
        atomic_write_bytes(tmp / f"{rel.image.name}.sbom.json", dump(rel.sbom))
        atomic_write_bytes(tmp / f"{rel.image.name}.provenance.json", dump(rel.provenance))
        if rel.provenance_sig is not None:
            atomic_write_bytes(tmp / f"{rel.image.name}.provenance.sig", rel.provenance_sig)
    entry = {"name": name, "version": version, "target": rel.manifest.get("target"),
             "recipe": rel.manifest.get("recipe"), "sha256": sha256_file(dest / rel.image.name),
             "size": (dest / rel.image.name).stat().st_size,
             "path": (dest / rel.image.name).relative_to(out).as_posix(),
             "signed": rel.provenance_sig is not None}
    atomic_write_text(base / "latest.json", json.dumps(entry, sort_keys=True, indent=2) + "\n")
    _update_index(out, entry)
    return entry


def _update_index(out: Path, entry: dict[str, Any]) -> None:
    index_path = out / "index.json"
    images: list[dict[str, Any]] = []
    if index_path.is_file():
        images = json.loads(index_path.read_text()).get("images", [])
    images = [e for e in images if (e["name"], e["version"]) != (entry["name"], entry["version"])]
    images = sorted([*images, entry], key=lambda e: (e["name"], e["version"]))
    atomic_write_text(index_path, json.dumps({"schema_version": 1, "images": images}, sort_keys=True,
                                             indent=2) + "\n")
    sums = "".join(f"{e['sha256']}  {e['path']}\n" for e in images)
    atomic_write_text(out / "SHA256SUMS", sums)
