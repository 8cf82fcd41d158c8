"""llmos-agent: the device side of `llmos-edge deploy` (python3 stdlib only): command dispatch.

The package is packed into one file by `pack.agent_script()`: the host runs that over SSH (`python3 -c
<bootstrap> CMD ...`, so probing changes nothing on the device) and ships it in every bundle as
bin/llmos-agent. Every command prints one JSON object on stdout (protocol.py).
Layout under ROOT: store/sha256/<hex>, staging/, releases/<version>/, current, previous, state/,
venvs/<key>/ (a release's offline wheels installed once per wheel set, by `prepare`).
Services: the runtime, and for ESP32 host bundles the serial bridge (systemd units, or two
pidfile-managed processes when there is no systemd).
Exit codes and command names: protocol.py.

Activation is a transaction (docs/design.md, "Device layout"): state/pending.json, fsync'd, names the
new version, the old release and the phase before anything moves; the release is committed (the
record removed) only once its smoke test passed and the runtime process serving is the new one. Every
entry point (probe, status, activate, rollback, boot) first finishes or reverts a transaction whose
worker died. Work (install, prepare, activate, rollback, boot) holds state/work.lock for as long as it
runs, whether or not the SSH client is still there; ages are measured on the device's boot clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import sys
from collections.abc import Callable

from . import protocol as P
from .base import (
    AgentError,
    Layout,
    audit,
    disk_free,
    has_systemd,
    is_resource_error,
    link_target,
    mem_available,
    read_json,
    resource_failure,
)
from .lock import _lock_info, cmd_hold, require_lock, work_lock
from .service import log_tail, pidfile_pid, service_pid, serving
from .state import committed, pending
from .store import cmd_clean_staging, cmd_commit, cmd_have, cmd_install, cmd_receive
from .transaction import cmd_activate, cmd_boot, cmd_prepare, cmd_rollback, resolve_pending, settle
from .venv import VENV_MARKER, release_wheels


def cmd_probe(lay: Layout, args: argparse.Namespace) -> dict:
    """What the host decides on; `current` is the committed release, `serving` what answers."""
    resolved = settle(lay)
    libc, libc_ver = platform.libc_ver()
    return {
        "resolved": resolved,
        "arch": platform.machine(),
        "os": platform.system().lower(),
        "libc": libc or "unknown",
        "libc_version": libc_ver,
        "python": "{}.{}".format(*sys.version_info[:2]),
        "python_full": platform.python_version(),
        "hostname": socket.gethostname(),
        "root": lay.root,
        "root_exists": os.path.isdir(lay.root),
        "disk_free": disk_free(lay.root),
        "mem_available": mem_available(),
        "current": committed(lay),
        "serving": serving(lay) if os.path.isdir(lay.releases) else None,
        "pending": pending(lay),
        "previous": link_target(lay.previous),
        "failed": read_json(lay.st("failed.json"), {}),
        "lock": _lock_info(lay),
        "busy": _lock_info(lay, "work.lock"),
        "device": read_json(lay.st("device.json"), {}),
        "systemd": has_systemd(),
        "uid": os.getuid(),
    }


# ---------------------------------------------------------------- status / releases / logs
def _releases(lay: Layout) -> list[dict]:
    out = []
    for name in sorted(os.listdir(lay.releases)) if os.path.isdir(lay.releases) else []:
        if name.startswith("."):
            continue
        path = os.path.join(lay.releases, name)
        out.append({"version": name, "installed": os.path.getmtime(path)})
    return sorted(out, key=lambda r: r["installed"])


def cmd_status(lay: Layout, args: argparse.Namespace) -> dict:
    """`current` is the committed release; `serving` what actually answers; any gap is spelled out.

    `busy` is the work lock as held at the start or at the end: a worker that commits while status
    looks (the fields are read one by one) makes this answer "in progress", never a settled gap.
    """
    busy = _lock_info(lay, "work.lock")
    resolved = settle(lay)
    cur, now = committed(lay), serving(lay)
    rec = pending(lay)
    problems = []
    if rec:
        problems.append(f"activation of {rec['version']} in progress (phase {rec.get('phase')}); "
                        f"{cur or 'nothing'} stays committed until it passes")
    if cur and now != cur:
        problems.append(f"committed release {cur} is not serving (serving: {now or 'nothing'})")
    elif not cur and now:
        problems.append(f"{now} serves but no release is committed")
    return {
        "current": cur,
        "serving": now,
        "pending": rec and {k: rec.get(k) for k in ("version", "old", "phase")},
        "discrepancy": "; ".join(problems) or None,
        "resolved": resolved,
        "previous": link_target(lay.previous),
        "pid": service_pid(lay),
        "bridge_pid": pidfile_pid(lay, "bridge"),
        "listening": now is not None and now == cur,
        "failed": read_json(lay.st("failed.json"), {}),
        "lock": _lock_info(lay),
        "busy": _lock_info(lay, "work.lock") or busy,
        "releases": [r["version"] for r in _releases(lay)],
        "hostname": socket.gethostname(),
    }


def cmd_releases(lay: Layout, args: argparse.Namespace) -> dict:
    """List releases; with --keep N prune all but the newest N (never current or previous)."""
    removed: list[str] = []
    if args.keep is not None:
        require_lock(lay, args.token)
        with work_lock(lay, "prune"):
            resolve_pending(lay)  # settle which releases are current and previous first
            removed = _prune(lay, args.keep)
    keep = {link_target(lay.current), link_target(lay.previous)}
    return {"releases": [dict(r, current=r["version"] in keep) for r in _releases(lay)], "removed": removed}


def _prune(lay: Layout, count: int) -> list[str]:
    rels = _releases(lay)
    keep = {link_target(lay.current), link_target(lay.previous)}
    newest = {r["version"] for r in rels[-count:]} if count > 0 else set()
    removed = []
    for r in rels:
        if r["version"] not in keep and r["version"] not in newest:
            shutil.rmtree(os.path.join(lay.releases, r["version"]))
            removed.append(r["version"])
    freed = _gc_store(lay)
    venvs = _gc_venvs(lay)
    audit(lay, "prune", removed=removed, keep=count, store_freed=freed, venvs_removed=venvs)
    return removed


def _gc_venvs(lay: Layout) -> list[str]:
    """Venvs whose wheel set no remaining release ships are deleted (their marker lists the wheels)."""
    wanted = [release_wheels(os.path.join(lay.releases, r["version"])) for r in _releases(lay)]
    parent = os.path.join(lay.root, "venvs")
    removed = []
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        marker = read_json(os.path.join(parent, name, VENV_MARKER))
        if not isinstance(marker, dict) or marker.get("wheels") not in wanted:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    return removed


def _gc_store(lay: Layout) -> int:
    """Blobs no release links to any more (link count 1) are deleted."""
    freed = 0
    for name in os.listdir(lay.store) if os.path.isdir(lay.store) else []:
        p = os.path.join(lay.store, name)
        st = os.stat(p)
        if st.st_nlink == 1:
            os.unlink(p)
            freed += st.st_size
    return freed


def cmd_logs(lay: Layout, args: argparse.Namespace) -> dict:
    events = []
    with contextlib.suppress(FileNotFoundError), open(lay.st("audit.jsonl"), encoding="utf-8") as f:
        events = [json.loads(line) for line in f.readlines()[-args.lines :]]
    return {"log": log_tail(lay, args.lines), "audit": events}


# ---------------------------------------------------------------- entry
COMMANDS: dict[str, Callable[[Layout, argparse.Namespace], dict]] = {
    P.PROBE: cmd_probe,
    P.HOLD: cmd_hold,
    P.HAVE: cmd_have,
    P.RECEIVE: cmd_receive,
    P.COMMIT: cmd_commit,
    P.INSTALL: cmd_install,
    P.PREPARE: cmd_prepare,
    P.CLEAN_STAGING: cmd_clean_staging,
    P.ACTIVATE: cmd_activate,
    P.BOOT: cmd_boot,
    P.ROLLBACK: cmd_rollback,
    P.STATUS: cmd_status,
    P.RELEASES: cmd_releases,
    P.LOGS: cmd_logs,
}
assert sorted(COMMANDS) == sorted(P.COMMANDS), "protocol.COMMANDS and the agent's commands differ"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmos-agent")
    p.add_argument("command", choices=sorted(P.COMMANDS))
    p.add_argument("--root", default="~/llmos")
    p.add_argument("--token")
    p.add_argument("--owner", default="unknown")
    p.add_argument("--ttl", type=float, default=3600.0)
    p.add_argument("--wait", type=float, default=0.0)
    p.add_argument("--version")
    p.add_argument("--to")
    p.add_argument("--target")
    p.add_argument("--python")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--latency-scale", type=float, default=1.0)
    p.add_argument("--keep", type=int)
    p.add_argument("--lines", type=int, default=50)
    return p


def _answer(payload: dict, rc: int) -> int:
    """The one JSON line; a client that went away (an orphaned worker) does not change the outcome."""
    with contextlib.suppress(OSError):
        print(json.dumps(payload, sort_keys=True, default=str), flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lay = Layout(args.root)
    lay.latency_scale = args.latency_scale
    try:
        result = COMMANDS[args.command](lay, args)
        return _answer({"ok": True, **result}, P.RC_OK)
    except AgentError as exc:
        return _answer({"ok": False, "error": str(exc), **exc.extra}, exc.rc)
    except (OSError, MemoryError) as exc:
        if not is_resource_error(exc):
            return _answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, P.RC_FAILED)
        err = resource_failure(lay, args.command, str(exc) or type(exc).__name__)
        return _answer({"ok": False, "error": str(err), **err.extra}, err.rc)
    except Exception as exc:  # report device-side failures as JSON, the host maps them to DeviceError
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, sort_keys=True))
        return P.RC_FAILED


