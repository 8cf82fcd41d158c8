"""Input-keyed cache entries and step timings for the slow parts of the QEMU guest build."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llmos_edge.fsutil import atomic_dir, atomic_write_text, file_lock
from llmos_edge.paths import cache_root

# Bump when the way an entry is built changes, so old entries are not reused.
RECIPE_VERSION = 1
_DONE = ".complete"


def qemu_cache() -> Path:
    return cache_root() / "qemu"


def cache_key(name: str, inputs: Mapping[str, object]) -> str:
    """Short, stable name for an entry: the step name plus a hash of everything that shapes it."""
    blob = json.dumps({"v": RECIPE_VERSION, "name": name, **inputs}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


@dataclass
class Timings:
    """Seconds per step and whether the step was served from the cache."""

    steps: list[tuple[str, float, bool]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str, cached: bool = False) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.steps.append((name, time.monotonic() - t0, cached))

    def add(self, name: str, seconds: float, cached: bool) -> None:
        self.steps.append((name, seconds, cached))

    def table(self) -> str:
        rows = [f"{n:<28} {s:8.1f} s  {'cached' if c else 'built'}" for n, s, c in self.steps]
        total = sum(s for n, s, _ in self.steps if not n.startswith(" "))  # indented rows are parts
        return "\n".join([*rows, f"{'total':<28} {total:8.1f} s"])

    def as_json(self) -> list[dict[str, object]]:
        return [{"step": n, "seconds": round(s, 2), "cached": c} for n, s, c in self.steps]


def is_cached(name: str, inputs: Mapping[str, object]) -> bool:
    return (qemu_cache() / cache_key(name, inputs) / _DONE).exists()


def cached_entry(
    name: str,
    inputs: Mapping[str, object],
    build: Callable[[Path], None],
    timings: Timings | None = None,
    refresh: bool = False,
) -> Path:
    """Return the entry for `inputs`, building it into a temp folder (renamed on success) if absent."""
    key = cache_key(name, inputs)
    final = qemu_cache() / key
    t0 = time.monotonic()
    with file_lock(qemu_cache() / f".{key}.lock"):
        hit = (final / _DONE).exists() and not refresh
        if not hit:
            if final.exists():
                shutil.rmtree(final)
            with atomic_dir(final) as tmp:
                build(tmp)
                atomic_write_text(tmp / "inputs.json", json.dumps(dict(inputs), indent=2, sort_keys=True))
                (tmp / _DONE).touch()
    if timings is not None:
        timings.add(name, time.monotonic() - t0, hit)
    return final
