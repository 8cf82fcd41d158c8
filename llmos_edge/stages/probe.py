"""Plan-time facts about a recipe's source and the build host, read cheaply and bounded.

`plan` must refuse what cannot build before any download or export: a source of the wrong kind,
an architecture no exporter takes, a build host that cannot run the format's quality gate. Nothing
here downloads, hashes or loads weights: only config.json or the GGUF header is read.
"""

from __future__ import annotations

import importlib
import json
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import UserError
from ..formats import Exporter
from ..paths import cache_root
from ..spec.models import Source

_MAX_CONFIG_BYTES = 4 << 20
_MAX_KEY_BYTES = 1 << 16
_MAX_KV = 100_000
_MAX_ARRAY_STRINGS = 1_000_000  # the largest real vocabularies hold ~262k tokens
_MAX_METADATA_BYTES = 64 << 20  # a real vocabulary is a few MB; a lying count must not scan gigabytes
_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type -> bytes
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass(frozen=True)
class SourceArchitecture:
    name: str  # HF class (config.json architectures[0]), else model_type / GGUF general.architecture
    origin: str  # where it was read, for messages
    config: Mapping[str, object] = field(default_factory=dict)  # config.json (HF folders only)


def source_path(source: Source, base_dir: Path | None) -> Path | None:
    """The local file or folder the source names, if one is already on disk (never downloads).

    An `hf` model missing from the local Hugging Face cache can never be fetched: refused here."""
    if source.kind in ("gguf", "local") and source.path:
        p = Path(source.path).expanduser()
        return p if p.is_absolute() or base_dir is None else base_dir / p
    if source.kind == "hf" and source.id:
        from .source import hf_cache_snapshot

        return hf_cache_snapshot(source.id, source.revision)  # not cached: refused now, with the fix
    if source.kind == "pypi" and source.sha256 and source.member:
        name = Path(source.member).name
        extracted = cache_root() / "stages" / "source" / source.sha256[:24] / name.removesuffix(".zip")
        return extracted if extracted.exists() else None
    return None


def check_source_kind(source: Source, base_dir: Path | None) -> None:
    """A folder given as kind "gguf", a .gguf given as "local", or a missing path: say the fix."""
    path = source_path(source, base_dir)
    if path is None or source.kind not in ("gguf", "local"):
        return
    if not path.exists():
        raise UserError(
            f"source.path {path} does not exist (kind = {source.kind!r})",
            hints=["check source.path in the recipe; a relative path resolves against the recipe file"],
        )
    if source.kind == "gguf" and path.is_dir():
        raise UserError(
            f'source.path {path} is a folder, but the recipe says kind = "gguf" (a single .gguf file)',
            hints=[
                'a Hugging Face folder (config.json + weights) is kind = "local": '
                'set [source] kind = "local"',
                "or point path at the .gguf file itself",
            ],
        )
    if source.kind == "gguf" and not path.is_file():
        raise UserError(
            f"source.path {path} is not a regular file (kind = \"gguf\" needs the .gguf file itself)",
            hints=["point path at the .gguf file"],
        )
    if source.kind == "local" and path.is_file():
        fix = (
            'set [source] kind = "gguf"'
            if path.suffix == ".gguf" or _has_gguf_magic(path)
            else "point path at the folder that holds config.json and the weights"
        )
        raise UserError(
            f'source.path {path} is a file, but kind = "local" means a Hugging Face model folder',
            hints=[fix],
        )
    if source.kind == "local" and not (path / "config.json").is_file():
        raise UserError(
            f"source.path {path} is not a Hugging Face model folder (no config.json)",
            hints=["point path at the folder that holds config.json and the weights"],
        )


def _has_gguf_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def read_architecture(source: Source, base_dir: Path | None) -> SourceArchitecture | None:
    """The source's model family, or None when it cannot be read without fetching it first."""
    path = source_path(source, base_dir)
    if path is not None and path.is_dir():
        return _hf_architecture(path / "config.json")
    if path is not None and path.is_file():
        with open(path, "rb") as f:
            return SourceArchitecture(gguf_architecture(f, str(path)), f"{path.name} (GGUF metadata)")
    if (
        source.kind == "pypi"
        and source.package
        and source.version
        and (source.member or "").endswith(".gguf")
    ):
        return _architecture_in_downloaded_wheel(source.package, source.version, source.member or "")
    return None


def architecture_of(path: Path) -> SourceArchitecture:
    """The model family of a fetched source (HF folder or .gguf file)."""
    if path.is_dir():
        return _hf_architecture(path / "config.json")
    with open(path, "rb") as f:
        return SourceArchitecture(gguf_architecture(f, str(path)), f"{path.name} (GGUF metadata)")


def _hf_architecture(config: Path) -> SourceArchitecture:
    if not config.is_file():
        raise UserError(f"{config.parent} has no config.json", hints=["is this a Hugging Face model folder?"])
    if config.stat().st_size > _MAX_CONFIG_BYTES:
        raise UserError(f"{config}: {config.stat().st_size} bytes is too large for a model config")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{config} is not valid JSON: {exc}", hints=["restore the model's config.json"]
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{config} must hold a JSON object")
    archs = data.get("architectures")
    name = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    name = name or (data.get("model_type") if isinstance(data.get("model_type"), str) else None)
    if not name:
        raise UserError(
            f"{config} names no architecture (no `architectures` list, no `model_type`)",
            hints=['add "architectures": ["LlamaForCausalLM"] (or the model\'s class) to config.json'],
        )
    return SourceArchitecture(_printable(name), "config.json", data)


def _architecture_in_downloaded_wheel(package: str, version: str, member: str) -> SourceArchitecture | None:
    dl = cache_root() / "dl"
    stem = re.sub(r"[-_.]+", "_", package).lower()
    wheels = sorted(dl.glob(f"{stem}-{version}-*.whl")) if dl.is_dir() else []
    if not wheels:
        return None
    try:
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(member) as f:
            return SourceArchitecture(gguf_architecture(f, f"{wheels[0].name}:{member}"), f"{member} (GGUF)")
    except (KeyError, zipfile.BadZipFile):
        return None  # fetch verifies the wheel and says what is wrong


class _Budget:
    """A reader that refuses to go past _MAX_METADATA_BYTES, whatever the header claims."""

    def __init__(self, f: IO[bytes], what: str) -> None:
        self.f, self.what, self.used = f, what, 0

    def read(self, n: int) -> bytes:
        self.used += n
        if self.used > _MAX_METADATA_BYTES:
            raise UserError(
                f"{self.what}: no general.architecture in the first {_MAX_METADATA_BYTES >> 20} MiB "
                "of GGUF metadata",
                hints=["the header may be corrupt; re-download or re-convert the file"],
            )
        return self.f.read(n)


def gguf_architecture(f: IO[bytes], what: str) -> str:
    """general.architecture from a GGUF header; every length is checked before it is trusted."""
    return _gguf_architecture(_Budget(f, what), what)


def _gguf_architecture(f: _Budget, what: str) -> str:
    head = _read(f, 24, what)
    if head[:4] != b"GGUF":
        raise UserError(f"{what} is not a GGUF file (magic {head[:4]!r})", hints=["re-download the file"])
    version, _n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise UserError(f"{what}: unsupported GGUF version {version} (supported: 2, 3)")
    if n_kv > _MAX_KV:
        raise UserError(
            f"{what}: corrupt GGUF header ({n_kv} metadata entries)", hints=["re-download the file"]
        )
    for _ in range(n_kv):
        key = _read_str(f, what, _MAX_KEY_BYTES)
        (vtype,) = struct.unpack("<I", _read(f, 4, what))
        if key == "general.architecture":
            if vtype != _GGUF_STRING:
                raise UserError(f"{what}: general.architecture is not a string (type {vtype})")
            return _printable(_read_str(f, what, _MAX_KEY_BYTES))
        _skip_value(f, vtype, what)
    raise UserError(
        f"{what}: the GGUF metadata has no general.architecture",
        hints=["convert the model with a current llama.cpp (convert_hf_to_gguf.py)"],
    )


_GGUF_BOOL = 7


def gguf_flag(path: Path, key: str) -> bool | None:
    """A boolean GGUF metadata value (tokenizer.ggml.add_bos_token), or None when absent, not a bool,
    or not found within the metadata budget: the caller keeps the tokenizer's own convention then."""
    what = str(path)
    try:
        with path.open("rb") as raw:
            f = _Budget(raw, what)
            head = _read(f, 24, what)
            version, _n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
            if head[:4] != b"GGUF" or version not in (2, 3) or n_kv > _MAX_KV:
                return None
            for _ in range(n_kv):
                name = _read_str(f, what, _MAX_KEY_BYTES)
                (vtype,) = struct.unpack("<I", _read(f, 4, what))
                if name == key:
                    return bool(_read(f, 1, what)[0]) if vtype == _GGUF_BOOL else None
                _skip_value(f, vtype, what)
    except (OSError, UserError):
        return None
    return None


def _skip_value(f: _Budget, vtype: int, what: str, depth: int = 0) -> None:
    if vtype in _GGUF_SCALAR:
        _read(f, _GGUF_SCALAR[vtype], what)
    elif vtype == _GGUF_STRING:
        (n,) = struct.unpack("<Q", _read(f, 8, what))
        _skip(f, n, what)
    elif vtype == _GGUF_ARRAY and depth == 0:
        etype, count = struct.unpack("<IQ", _read(f, 12, what))
        if etype in _GGUF_SCALAR:
            _skip(f, _GGUF_SCALAR[etype] * count, what)
        elif etype == _GGUF_STRING:
            if count > _MAX_ARRAY_STRINGS:
                raise UserError(f"{what}: corrupt GGUF metadata (an array of {count} strings)")
            for _ in range(count):
                _skip_value(f, _GGUF_STRING, what, depth + 1)
        else:
            raise UserError(f"{what}: corrupt GGUF metadata (array of type {etype})")
    else:
        raise UserError(f"{what}: corrupt GGUF metadata (value type {vtype})", hints=["re-download the file"])


def _read(f: _Budget, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise UserError(f"{what}: the GGUF header is truncated", hints=["re-download the file"])
    return data


def _skip(f: _Budget, n: int, what: str) -> None:
    """Skip n bytes, reading in chunks so a lying length hits end-of-file instead of memory."""
    while n > 0:
        step = min(n, 1 << 20)
        _read(f, step, what)
        n -= step


def _read_str(f: _Budget, what: str, limit: int) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8, what))
    if n > limit:
        raise UserError(f"{what}: corrupt GGUF metadata (a {n}-byte key)", hints=["re-download the file"])
    return _read(f, n, what).decode("utf-8", "replace")


def _printable(name: str) -> str:
    """Names end up in messages and reports: no control characters, bounded length."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean[:128]


def check_host(exporter: Exporter) -> None:
    """The quality gate runs the format's engine on the build host: refuse if it cannot import."""
    if exporter.host_module is None:
        return
    try:
        importlib.import_module(exporter.host_module)
    except ImportError as exc:
        raise UserError(
            f"format {exporter.format} needs {exporter.host_module.split('.')[0]} on this build host "
            f"to run the quality gate ({exc})",
            hints=[f"install it: {exporter.host_install}"],
        ) from None
