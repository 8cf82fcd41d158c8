"""Bundle side of encryption at rest: seal model weights to one device's X25519 key.

The format lives in llmos_edge/runtime/crypto.py, which ships in the bundle and decrypts on the
device; this module only drives it. Weights are encrypted straight from the source model folder,
so no plaintext copy is made. Encrypted bundles are not byte-reproducible (fresh keys each build).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..runtime import crypto
from .keys import load_device_public_key

WEIGHT_SUFFIXES = (".onnx", ".data", ".tflite", ".bin", ".safetensors", ".gguf")


def is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


class Sealer:
    """One per bundle: a fresh data key, wrapped once to the device key."""

    def __init__(self, device_pub: Path) -> None:
        dek = os.urandom(32)
        self.header = crypto.wrap_key(dek, load_device_public_key(device_pub))
        self._dek = dek
        self.sealed: list[str] = []

    def seal_file(self, src: Path, dest_dir: Path, bundle_root: Path) -> Path:
        """Write dest_dir/<name>.enc from the plaintext src."""
        enc = dest_dir / (src.name + crypto.ENC_SUFFIX)
        with open(src, "rb") as fi, open(enc, "wb") as fo:
            crypto.encrypt_stream(fi, fo, self._dek, src.name)
        self.sealed.append(enc.relative_to(bundle_root).as_posix())
        return enc

    def write_info(self, dest_dir: Path, sealed_names: list[str]) -> None:
        files = {name: name + crypto.ENC_SUFFIX for name in sealed_names}
        info = {**self.header, "files": files}
        (dest_dir / crypto.INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def manifest_entry(self) -> dict[str, Any]:
        return {"scheme": crypto.SCHEME, "device_key_id": self.header["device_key_id"],
                "files": sorted(self.sealed)}
