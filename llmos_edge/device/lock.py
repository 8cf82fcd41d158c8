"""The session lock and the work lock: flocks the kernel frees when their holder dies."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator

from .base import AgentError, Layout, audit, boot_id, read_json, uptime
from .protocol import RC_LOCKED


# ---------------------------------------------------------------- locks
# Two flocks, both freed by the kernel the moment their holder dies, so liveness, never age, decides
# whether a lock is stale:
# - state/lock, the session lock: a `hold` process keeps it for as long as the deploy's SSH session
#   lives; the other commands of that deploy present its token.
# - state/work.lock, the work lock: held by the process doing the work (install, prepare, activate,
#   rollback, boot, resolving a transaction) until that work ends, even if its SSH client went away.
# Each lock file records its holder (pid, boot id, start on the boot clock) for messages; a record
# whose flock is free, or whose boot id is not this boot's, describes nobody.
def _lock_info(lay: Layout, name: str = "lock") -> dict | None:
    info = read_json(lay.st(name))
    if not isinstance(info, dict) or not _flock_held(lay.st(name)):
        return None
    if info.get("boot_id") == boot_id() and isinstance(info.get("since_boot"), int | float):
        info["held_for"] = round(uptime() - float(info["since_boot"]), 1)
    return info


def _flock_held(path: str) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _try_flock(path: str) -> int | None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _record_holder(fd: int, **info: object) -> None:
    data = dict(info, pid=os.getpid(), boot_id=boot_id(), since_boot=uptime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(data).encode(), 0)


def _end_stuck_holder(lay: Layout) -> None:
    """A `hold` session older than its ttl on this boot's clock is ended (never a worker, never by
    wall-clock age: a clock step from 1970 to now must not expire a live lock)."""
    held = _lock_info(lay) or {}
    ttl, age = held.get("ttl"), held.get("held_for")
    if isinstance(ttl, int | float) and isinstance(age, int | float) and age > ttl and held.get("pid"):
        audit(lay, "lock_expired", stale_owner=held.get("owner"), held_for=age, ttl=ttl)
        with contextlib.suppress(OSError):
            os.kill(int(held["pid"]), signal.SIGTERM)
        time.sleep(0.5)


def locked_error(lay: Layout, message: str, held: dict | None) -> AgentError:
    held = held or {}
    return AgentError(
        message,
        RC_LOCKED,
        holder=held.get("owner") or held.get("work"),
        held_for=held.get("held_for"),
        holder_pid=held.get("pid"),
    )


def cmd_hold(lay: Layout, args: argparse.Namespace) -> dict:
    """Take the session lock and keep it until stdin closes (the deploy's session ends)."""
    lay.ensure()
    fd = _try_flock(lay.st("lock"))
    if fd is None:
        _end_stuck_holder(lay)
        fd = _try_flock(lay.st("lock"))
    if fd is None:
        raise locked_error(lay, "device is locked", _lock_info(lay))
    deadline = time.monotonic() + args.wait
    while (worker := _lock_info(lay, "work.lock")) and time.monotonic() < deadline:
        time.sleep(0.2)  # an orphaned worker of an earlier session still runs: let it finish first
    if worker:
        os.close(fd)
        what = f"{worker.get('work')} (pid {worker.get('pid')})"
        raise locked_error(lay, f"device is busy: {what} is still running", dict(worker, owner=what))
    _record_holder(fd, token=args.token, owner=args.owner, ttl=args.ttl)
    print(json.dumps({"ok": True, "locked": True, "root": lay.root}), flush=True)
    while sys.stdin.buffer.read(4096):
        pass
    still = read_json(lay.st("lock"))
    if isinstance(still, dict) and still.get("token") == args.token:
        os.ftruncate(fd, 0)
    os.close(fd)
    raise SystemExit(0)


def require_lock(lay: Layout, token: str | None) -> None:
    held = _lock_info(lay)
    if not held or held.get("token") != token:
        raise locked_error(lay, "this deploy does not hold the device lock (it was lost)", held)


@contextlib.contextmanager
def work_lock(lay: Layout, work: str) -> Iterator[None]:
    """Held by this process while it changes releases or the service; SIGHUP/SIGPIPE cannot end it."""
    lay.ensure()
    fd = _try_flock(lay.st("work.lock"))
    if fd is None:
        held = _lock_info(lay, "work.lock") or {}
        what = f"{held.get('work', 'another command')} (pid {held.get('pid')})"
        raise locked_error(lay, f"device is busy: {what} is still running", dict(held, owner=what))
    for sig in (signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    _record_holder(fd, work=work)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


