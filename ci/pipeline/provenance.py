"""Per-image SBOM (CycloneDX 1.5) and provenance (in-toto statement, SLSA v1 predicate).

Both are derived only from the bundle manifest and the image hash, so they are as reproducible as
the image itself: no wall-clock times, no host names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llmos_edge.fsutil import sha256_file

BUILD_TYPE = "https://llmos-edge.dev/ci/pipeline/v1"
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-")


def _wheel_components(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for rel, entry in manifest.get("files", {}).items():
        m = _WHEEL_RE.match(Path(rel).name)
        if rel.startswith("wheels/") and rel.endswith(".whl") and m:
            name = m["name"].replace("_", "-").lower()
            out.append({"type": "library", "name": name, "version": m["version"],
                        "purl": f"pkg:pypi/{name}@{m['version']}",
                        "hashes": [{"alg": "SHA-256", "content": entry["sha256"]}]})
    return out


def _model_components(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for mid in manifest.get("models", []):
        files = {k: v for k, v in manifest.get("files", {}).items() if k.startswith(f"models/{mid}/")}
        out.append({"type": "machine-learning-model", "name": mid,
                    "hashes": [{"alg": "SHA-256", "content": v["sha256"]} for _, v in sorted(files.items())],
                    "properties": [{"name": "llmos:source_model_sha256",
                                    "value": str(manifest.get("source_model_sha256", ""))}]})
    return out


def sbom(manifest: dict[str, Any], image: Path) -> dict[str, Any]:
    name, version = manifest["name"], manifest["bundle_version"]
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {"timestamp": manifest.get("created"),
                     "component": {"type": "firmware", "name": name, "version": version,
                                   "hashes": [{"alg": "SHA-256", "content": sha256_file(image)}]},
                     "properties": [{"name": "llmos:target", "value": manifest.get("target", "")},
                                    {"name": "llmos:recipe", "value": manifest.get("recipe", "")}]},
        "components": [*_model_components(manifest), *_wheel_components(manifest),
                       {"type": "library", "name": "llmos_runtime", "version": version}],
    }


def provenance(manifest: dict[str, Any], image: Path, repro_hashes: list[str]) -> dict[str, Any]:
    """An in-toto statement whose subject is the image; it lists inputs, toolchain lock, hashes."""
    files = manifest.get("files", {})
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": image.name, "digest": {"sha256": sha256_file(image)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"target": manifest.get("target"), "recipe": manifest.get("recipe"),
                                       "version": manifest.get("bundle_version"),
                                       "source_date": manifest.get("created")},
                "internalParameters": {"toolchain_lock": manifest.get("toolchain_lock", {}),
                                       "platform": manifest.get("platform", {})},
                "resolvedDependencies": [
                    {"name": "source-model", "digest": {"sha256": manifest.get("source_model_sha256", "")}},
                    *({"name": rel, "digest": {"sha256": e["sha256"]}}
                      for rel, e in sorted(files.items()) if rel.startswith("wheels/")),
                ],
            },
            "runDetails": {
                "builder": {"id": BUILD_TYPE},
                "metadata": {"reproducible": len(set(repro_hashes)) == 1, "rebuild_sha256": repro_hashes},
                "byproducts": [{"name": "manifest.json", "digest": {"sha256": manifest_digest(manifest)}},
                               {"name": "quality_report", "content": manifest.get("quality_report", {})}],
            },
        },
    }


def manifest_digest(manifest: dict[str, Any]) -> str:
    import hashlib

    blob = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True) + "\n"
    return hashlib.sha256(blob.encode()).hexdigest()


def dump(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()
