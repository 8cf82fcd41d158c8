"""manifest.json: its exact bytes (what gets signed), parsing, and the verified view of it."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import CheckFailed, UserError
from ..spec.limits import depth_problem

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
NOT_IN_FILES = frozenset({MANIFEST, SIGNATURE})
MAX_MANIFEST_BYTES = 16 << 20  # thousands of files fit in well under 1 MiB
MAX_DEPTH = 32  # the manifest nests 4 levels
MAX_FILE_BYTES = 64 << 30
_SHA256 = re.compile(r"[0-9a-f]{64}")
DEFAULT_EPOCH = 0  # used when SOURCE_DATE_EPOCH is unset: builds stay reproducible by default


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) or 0 when unset."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return DEFAULT_EPOCH
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(f"SOURCE_DATE_EPOCH={raw!r} is not a non-negative integer (seconds since 1970)",
                        hints=["unset it, or set it to e.g. $(git log -1 --format=%ct)"])
    return value


def created_iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dump(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes: sorted keys, 2-space indent, ASCII, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def parse(data: bytes, where: Path) -> dict[str, Any]:
    """Parse within limits (size, nesting): a hostile manifest is a clear CheckFailed, never a crash."""
    damaged = ["the bundle is damaged or was tampered with; rebuild or re-download it"]
    if len(data) > MAX_MANIFEST_BYTES:
        raise CheckFailed(f"{where} is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}", hints=damaged)
    try:
        text = data.decode("utf-8")
        problem = depth_problem(text, toml=False, max_depth=MAX_DEPTH)
        if problem:
            raise CheckFailed(f"{where} {problem}", hints=damaged)
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckFailed(f"{where} is not valid JSON: {exc}", hints=damaged) from exc
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        raise CheckFailed(f"{where}: unsupported manifest (schema_version must be {SCHEMA_VERSION})",
                          hints=["use the llmos-edge version that built the bundle"])
    files = raw.get("files")
    if not isinstance(files, dict) or not all(_is_entry(v) for v in files.values()):
        raise CheckFailed(f"{where}: 'files' must map paths to {{sha256, size}}")
    if not all(isinstance(raw.get(k), str) and raw[k] for k in ("name", "bundle_version")):
        raise CheckFailed(f"{where}: 'name' and 'bundle_version' must be non-empty strings",
                          hints=["the bundle is damaged or was not written by `llmos-edge build`"])
    return raw


def bad_relpath(rel: str) -> bool:
    """A listed path that could point outside the bundle, or over its manifest/signature."""
    return (not rel or rel.startswith("/") or "\\" in rel or "\0" in rel
            or any(x in ("..", ".", "") for x in rel.split("/")) or rel in NOT_IN_FILES)


def _is_entry(value: Any) -> bool:
    size, digest = (value.get("size"), value.get("sha256")) if isinstance(value, dict) else (None, None)
    return (isinstance(digest, str) and _SHA256.fullmatch(digest) is not None
            and isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_FILE_BYTES)


@dataclass(frozen=True)
class Manifest:
    """A manifest that passed verification, and how it was trusted."""

    raw: dict[str, Any]
    folder: Path
    signed_by: str | None  # key id (sha256 of the raw Ed25519 public key), None when unsigned
    unsigned_allowed: bool = False  # True: accepted without a valid signature because the user asked

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def version(self) -> str:
        return str(self.raw["bundle_version"])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        files: dict[str, dict[str, Any]] = self.raw["files"]
        return files

    @property
    def encrypted(self) -> dict[str, Any] | None:
        enc: dict[str, Any] | None = self.raw.get("encrypted")
        return enc

    @property
    def trust(self) -> str:
        if self.signed_by:
            return f"signed by key {self.signed_by[:16]}"
        return "UNSIGNED (accepted because --allow-unsigned was given)"
