"""The release records under state/: the pending activation, failed versions, the committed release."""

from __future__ import annotations

import json
import os
import time

from .base import Layout, link_target, read_json, safe_relpath, write_atomic


def mark_failed(lay: Layout, version: str, reason: str) -> None:
    failed = read_json(lay.st("failed.json"), {})
    assert isinstance(failed, dict)
    failed[version] = {"time": time.time(), "reason": reason[-500:]}
    write_atomic(lay.st("failed.json"), json.dumps(failed, indent=2, sort_keys=True).encode())


def pending(lay: Layout) -> dict | None:
    """The activation record, or None; one naming anything but release folders counts as unreadable."""
    try:
        if os.path.getsize(lay.st("pending.json")) > 65536:
            return None
    except OSError:
        return None
    rec = read_json(lay.st("pending.json"))
    if not isinstance(rec, dict) or not _version_name(rec.get("version")):
        return None
    if not all(rec.get(k) is None or _version_name(rec.get(k)) for k in ("old", "old_previous")):
        return None
    return rec


def _version_name(name: object) -> bool:
    return isinstance(name, str) and safe_relpath(name) and "/" not in name


def committed(lay: Layout) -> str | None:
    rec = pending(lay)
    return rec.get("old") if rec else link_target(lay.current)


