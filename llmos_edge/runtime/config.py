"""Runtime config (config/runtime.json): typed, validated once, relative paths resolved."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: Path
    max_concurrency: int = 1
    max_queue: int = 8
    est_memory_mb: float | None = None


@dataclass(frozen=True)
class RuntimeConfig:
    models: tuple[ModelEntry, ...]
    host: str = "127.0.0.1"
    port: int = 8088
    api_key_env: str | None = None
    memory_budget_mb: float = 2048
    audit_log: Path | None = None
    audit_raw: bool = False
    threads: int = 0
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    device_key: Path | None = None
    queue_timeout_s: float = 120.0
    max_body_bytes: int = 1 << 20
    memory_factor: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)

    def api_key(self) -> str | None:
        """The key is read from the environment so it never sits in the bundle."""
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def with_overrides(self, **kw: Any) -> RuntimeConfig:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def _model(raw: Any, base: Path, i: int) -> ModelEntry:
    if not isinstance(raw, dict) or "path" not in raw:
        raise ConfigError(f"models[{i}]: needs an object with at least 'path'")
    path = (base / str(raw["path"])).resolve()
    mid = str(raw.get("id") or path.name)
    try:
        return ModelEntry(
            id=mid,
            path=path,
            max_concurrency=max(1, int(raw.get("max_concurrency", 1))),
            max_queue=max(0, int(raw.get("max_queue", 8))),
            est_memory_mb=float(raw["est_memory_mb"]) if raw.get("est_memory_mb") else None,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"models[{i}] ({mid}): {exc}") from exc


def parse_config(raw: dict[str, Any], base: Path) -> RuntimeConfig:
    """Build a config from the JSON object; `base` is the folder relative paths resolve against."""
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError("runtime config: 'models' must be a non-empty list")
    entries = tuple(_model(m, base, i) for i, m in enumerate(models))
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"runtime config: duplicate model ids in {ids}")
    audit = raw.get("audit_log")
    key = raw.get("device_key")
    known = set(RuntimeConfig.__dataclass_fields__) - {"models", "extra"}
    try:
        return RuntimeConfig(
            models=entries,
            host=str(raw.get("host", "127.0.0.1")),
            port=int(raw.get("port", 8088)),
            api_key_env=raw.get("api_key_env"),
            memory_budget_mb=float(raw.get("memory_budget_mb", 2048)),
            audit_log=(base / audit) if audit else None,
            audit_raw=bool(raw.get("audit_raw", False)),
            threads=int(raw.get("threads", 0)),
            execution_providers=tuple(raw.get("execution_providers") or ("CPUExecutionProvider",)),
            device_key=(base / key) if key else None,
            queue_timeout_s=float(raw.get("queue_timeout_s", 120.0)),
            max_body_bytes=int(raw.get("max_body_bytes", 1 << 20)),
            memory_factor=float(raw.get("memory_factor", 2.0)),
            extra={k: v for k, v in raw.items() if k not in known and k != "models"},
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"runtime config: {exc}") from exc


def load_config(path: Path) -> RuntimeConfig:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"runtime config not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"runtime config {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"runtime config {path}: expected a JSON object")
    return parse_config(raw, Path(path).resolve().parent)


def config_for_model_dirs(dirs: list[Path], **overrides: Any) -> RuntimeConfig:
    """A config serving the given model dirs, ids from their llmos_model.json names."""
    models = []
    for d in dirs:
        desc = Path(d) / "llmos_model.json"
        try:
            name = json.loads(desc.read_text()).get("name") or Path(d).name
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{desc}: cannot read model descriptor: {exc}") from exc
        models.append({"id": name, "path": str(Path(d).resolve())})
    return parse_config(
        {"models": models, **{k: v for k, v in overrides.items() if v is not None}}, Path(".")
    )
