"""Offline wheels: the runtime's dependencies for the target platform, downloaded once, cached.

Versions are pinned to what this llmos-edge environment runs, so the device gets the exact
runtime the host tested. The cache key covers platforms, Python version and every pin.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_dir
from ..paths import cache_root

# jinja2 (+ markupsafe, pinned too so the wheel set is reproducible): chat templates of the engines
# onnxruntime-genai does not render itself (plain onnxruntime decoders, TFLite); without it their chat is 503.
RUNTIME_DISTS = ("onnxruntime", "onnxruntime-genai", "numpy", "tokenizers", "jinja2", "markupsafe")
CRYPTO_DISTS = ("cryptography",)


def pinned_requirements(encrypted: bool, python: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """Exact pins when the target runs this Python; else "<=" ours (older Pythons lack our versions).

    extra: more distributions the bundle's programs need (the ESP32 bridge's pyserial).
    """
    dists = RUNTIME_DISTS + (CRYPTO_DISTS if encrypted else ()) + extra
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    op = "==" if python in (None, here) else "<="
    pins = []
    for dist in dists:
        try:
            pins.append(f"{dist}{op}{metadata.version(dist)}")
        except metadata.PackageNotFoundError as exc:
            raise UserError(f"{dist} is not installed here, so its version cannot be pinned for the bundle",
                            hints=[f"pip install {dist}", "or build with --no-wheels"]) from exc
    return pins


def cache_key(platforms: tuple[str, ...], python: str, requirements: list[str]) -> str:
    blob = json.dumps({"platforms": list(platforms), "python": python, "reqs": sorted(requirements)})
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def download_command(platforms: tuple[str, ...], python: str, requirements: list[str],
                     dest: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "--implementation", "cp", "--python-version", python, "--dest", str(dest)]
    for plat in platforms:
        cmd += ["--platform", plat]
    return [*cmd, *requirements]


def fetch_wheels(platforms: tuple[str, ...], python: str | None, encrypted: bool,
                 extra: tuple[str, ...] = ()) -> Path:
    """The cache folder holding every wheel the runtime needs on that platform."""
    if not platforms or not python:
        raise UserError("the target names no wheel_platforms / python, so offline wheels cannot be chosen",
                        hints=["add platform.wheel_platforms to the target", "or build with --no-wheels"])
    reqs = pinned_requirements(encrypted, python, extra)
    dest = cache_root() / "wheels" / cache_key(platforms, python, reqs)
    if dest.is_dir():
        return dest
    with atomic_dir(dest) as tmp:
        proc = subprocess.run(download_command(platforms, python, reqs, tmp), capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise UserError(f"pip could not download wheels for {', '.join(platforms)} / py{python}:\n{tail}",
                            hints=["check network access to the package index",
                                   "some runtime deps publish no wheel for this platform/Python: "
                                   "install them on the device and build with --no-wheels"])
        if not any(tmp.glob("*.whl")):
            raise UserError("pip downloaded no wheels", hints=["build with --no-wheels"])
    return dest


def copy_wheels(src: Path, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in src.glob("*.whl"))
    for name in names:
        shutil.copyfile(src / name, dest / name)
    return names
