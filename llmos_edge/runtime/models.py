"""Several models in one process within a memory budget: load on demand, LRU unload, bounded queues."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelEntry, RuntimeConfig
from .descriptor import (
    ModelDescriptor,
    prepare_model_dir,
    read_descriptor,
    release_model_dir,
    sweep_decrypted,
    weight_bytes,
)
from .engines import EngineOptions, create_engine
from .errors import ApiError, ConfigError, RuntimeFailure


@dataclass
class _Slot:
    """Per-model admission: `active` run, `waiting` queue for a turn; both bounded."""

    entry: ModelEntry
    sem: threading.BoundedSemaphore
    waiting: int = 0
    active: int = 0


@dataclass
class _Loaded:
    engine: Any
    descriptor: ModelDescriptor
    memory_mb: float
    loaded_at: float
    model_dir: Path
    source_dir: Path
    rss_delta_mb: float = 0.0


def rss_mb() -> float:
    """Resident set size now (Linux); 0 elsewhere. Reported per load, next to the estimate."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class ModelManager:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.entries = {e.id: e for e in config.models}
        self.slots = {e.id: _Slot(e, threading.BoundedSemaphore(e.max_concurrency)) for e in config.models}
        self.loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.Lock()  # guards slots' counters, `loaded`, and loading itself
        self._descriptors: dict[str, ModelDescriptor] = {}
        self.evictions = 0
        self.options = EngineOptions(tuple(config.execution_providers), config.threads)
        sweep_decrypted()

    def descriptor(self, model_id: str) -> ModelDescriptor:
        """Descriptor without loading weights (task checks, /v1/models)."""
        entry = self._entry(model_id)
        if model_id not in self._descriptors:
            try:
                self._descriptors[model_id] = read_descriptor(entry.path)
            except ConfigError as exc:
                raise ApiError(503, str(exc), type="server_error", code="model_unavailable") from exc
        return self._descriptors[model_id]

    def _entry(self, model_id: str) -> ModelEntry:
        if model_id not in self.entries:
            raise ApiError(
                404,
                f"model {model_id!r} not found; available: {sorted(self.entries)}",
                param="model",
                code="model_not_found",
            )
        return self.entries[model_id]

    def estimate_mb(self, entry: ModelEntry) -> float:
        if entry.est_memory_mb:
            return entry.est_memory_mb
        return weight_bytes(entry.path) * self.config.memory_factor / 2**20

    def used_mb(self) -> float:
        return sum(m.memory_mb for m in self.loaded.values())

    @contextlib.contextmanager
    def use(self, model_id: str) -> Iterator[Any]:
        """Admit (429 when the queue is full), wait for a turn, make sure it is loaded, yield the engine."""
        slot = self.slots[self._entry(model_id).id]
        with self._lock:
            if slot.waiting + slot.active >= slot.entry.max_concurrency + slot.entry.max_queue:
                raise ApiError(
                    429,
                    f"model {model_id!r} is busy: {slot.active} running, {slot.waiting} queued; retry later",
                    type="rate_limit_error",
                    code="queue_full",
                    retry_after=1,
                )
            slot.waiting += 1
        got = slot.sem.acquire(timeout=self.config.queue_timeout_s)
        with self._lock:
            slot.waiting -= 1
            if not got:
                raise ApiError(
                    429,
                    f"model {model_id!r}: timed out waiting in queue",
                    type="rate_limit_error",
                    code="queue_timeout",
                    retry_after=5,
                )
            slot.active += 1
        try:
            yield self._ensure_loaded(model_id).engine
        finally:
            with self._lock:
                slot.active -= 1
            slot.sem.release()

    def _ensure_loaded(self, model_id: str) -> _Loaded:
        with self._lock:
            if model_id in self.loaded:
                self.loaded.move_to_end(model_id)
                return self.loaded[model_id]
            entry = self.entries[model_id]
            need = self.estimate_mb(entry)
            self._make_room(model_id, need)
            loaded = self._load(entry, need)
            self.loaded[model_id] = loaded
            return loaded

    def _make_room(self, model_id: str, need: float) -> None:
        budget = self.config.memory_budget_mb
        if need > budget:
            raise ApiError(
                503,
                f"model {model_id!r} needs ~{need:.0f} MB but the memory budget is {budget:.0f} MB; "
                "raise memory_budget_mb or use a smaller quantization",
                type="server_error",
                code="model_too_large",
            )
        for victim in list(self.loaded):
            if self.used_mb() + need <= budget:
                break
            if self.slots[victim].active == 0:
                self._unload(victim)
        if self.used_mb() + need > budget:
            raise ApiError(
                503,
                f"model {model_id!r} (~{need:.0f} MB) does not fit next to busy models "
                f"({self.used_mb():.0f}/{budget:.0f} MB in use); retry later",
                type="server_error",
                code="memory_busy",
                retry_after=2,
            )

    def _load(self, entry: ModelEntry, need: float) -> _Loaded:
        try:
            model_dir = prepare_model_dir(entry.path, self.config.device_key)
        except RuntimeFailure as exc:
            raise ApiError(503, str(exc), type="server_error", code="model_load_failed") from exc
        before = rss_mb()
        try:
            desc = read_descriptor(model_dir)
            engine = create_engine(model_dir, desc, self.options)
        except (RuntimeFailure, OSError, ValueError) as exc:
            release_model_dir(model_dir, entry.path)
            msg = str(exc) if isinstance(exc, RuntimeFailure) else f"model {entry.id!r} failed to load: {exc}"
            raise ApiError(503, msg, type="server_error", code="model_load_failed") from exc
        release_model_dir(model_dir, entry.path)  # decrypted weights: unlinked once the engine holds them
        return _Loaded(engine, desc, need, time.time(), model_dir, entry.path, rss_mb() - before)

    def _unload(self, model_id: str) -> None:
        loaded = self.loaded.pop(model_id)
        loaded.engine.close()
        release_model_dir(loaded.model_dir, loaded.source_dir)
        del loaded
        gc.collect()
        self.evictions += 1

    def close(self) -> None:
        with self._lock:
            for mid in list(self.loaded):
                self._unload(mid)

    def gauges(self) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        """Loaded models, memory accounting and queue depth for /metrics."""
        with self._lock:
            out: list[tuple[str, tuple[tuple[str, str], ...], float]] = [
                ("llmos_models_loaded", (), float(len(self.loaded))),
                ("llmos_memory_used_mb", (), self.used_mb()),
                ("llmos_memory_budget_mb", (), float(self.config.memory_budget_mb)),
                ("llmos_model_evictions", (), float(self.evictions)),
            ]
            for mid, slot in self.slots.items():
                lab = (("model", mid),)
                out += [
                    ("llmos_model_loaded", lab, float(mid in self.loaded)),
                    ("llmos_queue_depth", lab, float(slot.waiting)),
                    ("llmos_active_requests", lab, float(slot.active)),
                ]
                if mid in self.loaded:
                    out.append(("llmos_model_load_rss_delta_mb", lab, self.loaded[mid].rss_delta_mb))
            return out
