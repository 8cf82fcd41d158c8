"""Content-addressed stage cache: key = hash(input hashes, stage options, toolchain lock, stage code).

The code part (formats.Exporter.stage_code) hashes the worker scripts and stage modules behind a
stage, so an edited worker never silently reuses an output made by its old version.

Each entry is a folder cache_root()/stages/<stage>/<key>/ created atomically (temp folder renamed
when the stage succeeded), so an entry that exists is complete. `.llmos-stage.json` inside records
what made it, for `cache ls`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import Exporter, stage_code_union
from .fsutil import atomic_dir
from .paths import cache_root

META = ".llmos-stage.json"
KEY_VERSION = 1  # bump when a stage's output layout changes


@dataclass(frozen=True)
class CacheEntry:
    stage: str
    key: str
    path: Path
    size_bytes: int
    created: float
    last_used: float
    meta: dict[str, Any]


_PKG = Path(__file__).resolve().parent
# stage -> source files (relative to the llmos_edge package) whose code makes that stage's output, over
# every format. Builds key each stage on their own exporter's files (formats.Exporter.stage_code);
# this union serves a stage_key() called without an exporter (safe over-invalidation).
STAGE_CODE: dict[str, tuple[str, ...]] = stage_code_union()


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of one source file; (mtime, size) in the cache key makes an edit re-hash it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def code_hash(files: Iterable[Path]) -> str:
    """One digest over the named source files' contents (a missing file counts as absent)."""
    h = hashlib.sha256()
    for f in sorted(Path(p) for p in files):
        try:
            st = f.stat()
            digest = _file_digest(str(f), st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            digest = "missing"
        h.update(f"{f.name}:{digest}\n".encode())
    return h.hexdigest()


def stage_code_files(stage: str) -> list[Path]:
    return [_PKG / rel for rel in STAGE_CODE.get(stage, ())]


def code_files(exporter: Exporter, stage: str) -> list[Path]:
    """The files behind `stage` of one exporter; a stage the table does not list is a bug."""
    files = exporter.code_files(stage)
    if not files:
        raise KeyError(f"formats table: {exporter.format}/{exporter.task} lists no code for stage {stage!r}")
    return [_PKG / rel for rel in files]


def stages_root() -> Path:
    return cache_root() / "stages"


def stage_key(
    stage: str,
    inputs: Mapping[str, str],
    options: Mapping[str, Any],
    toolchain_lock: str | None = None,
    *,
    code: Iterable[Path] | None = None,
) -> str:
    """A stable key over everything that can change the output; `code` defaults to STAGE_CODE[stage]."""
    blob = json.dumps(
        {
            "v": KEY_VERSION,
            "stage": stage,
            "inputs": dict(inputs),
            "options": dict(options),
            "toolchain": toolchain_lock,
            "code": code_hash(stage_code_files(stage) if code is None else code),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def entry_dir(stage: str, key: str) -> Path:
    return stages_root() / stage / key


def run_stage(
    stage: str,
    key: str,
    produce: Callable[[Path], Mapping[str, Any] | None],
    *,
    no_cache: bool = False,
    describe: Mapping[str, Any] | None = None,
) -> tuple[Path, bool]:
    """Return (entry folder, cache_hit). `produce(tmp)` fills a temp folder; it is published on success."""
    final = entry_dir(stage, key)
    if not no_cache and (final / META).is_file():
        _touch(final)
        return final, True
    with atomic_dir(final) as tmp:
        started = time.time()
        extra = produce(tmp) or {}
        meta = {
            "stage": stage,
            "key": key,
            "created": time.time(),
            "seconds": round(time.time() - started, 2),
            "describe": dict(describe or {}),
            **dict(extra),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
    return final, False


def read_meta(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((path / META).read_text())
        return data
    except (OSError, ValueError):
        return {}


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache still serves hits
        (path / META).touch()


def list_entries() -> list[CacheEntry]:
    """Every complete entry (temp folders of running or crashed stages are skipped)."""
    out: list[CacheEntry] = []
    root = stages_root()
    if not root.is_dir():
        return out
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for d in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            meta_file = d / META
            if not meta_file.is_file():
                continue
            st = meta_file.stat()
            meta = read_meta(d)
            out.append(
                CacheEntry(
                    stage_dir.name,
                    d.name,
                    d,
                    _size(d),
                    float(meta.get("created", st.st_mtime)),
                    st.st_mtime,
                    meta,
                )
            )
    return out


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def prune(
    *,
    older_than_days: float | None = None,
    stage: str | None = None,
    dry_run: bool = False,
    everything: bool = False,
) -> list[CacheEntry]:
    """Remove entries not used for `older_than_days` (or all with `everything`); also crash leftovers."""
    now = time.time()
    removed: list[CacheEntry] = []
    for e in list_entries():
        if stage and e.stage != stage:
            continue
        if everything or (older_than_days is not None and now - e.last_used > older_than_days * 86400):
            removed.append(e)
            if not dry_run:
                shutil.rmtree(e.path, ignore_errors=True)
    if not dry_run:
        _remove_partials()
    return removed


def _remove_partials(max_age_s: float = 6 * 3600) -> None:
    """Temp folders of stages that crashed long ago (recent ones may belong to a running build)."""
    root = stages_root()
    if not root.is_dir():
        return
    for p in root.glob("*/.*.partial"):
        if time.time() - p.stat().st_mtime > max_age_s:
            shutil.rmtree(p, ignore_errors=True)
