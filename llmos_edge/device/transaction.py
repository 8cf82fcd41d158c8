"""prepare, activate, rollback and boot: activation as a transaction with a pending record."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from .base import (
    AgentError,
    Layout,
    audit,
    fault_point,
    fsync_dir,
    is_resource_error,
    link_target,
    read_json,
    remove_link,
    resource_failure,
    resource_text,
    safe_relpath,
    switch_link,
    uptime,
    write_atomic,
)
from .lock import _lock_info, require_lock, work_lock
from .protocol import RC_REFUSED, RC_RESOURCE, RC_SMOKE
from .service import (
    _systemd_mode,
    check_release,
    log_tail,
    service_pid,
    service_stop,
    serving,
    start_release,
    wait_healthy,
)
from .state import mark_failed, pending
from .venv import _configured_python, _wheels_need, ensure_venv


def cmd_prepare(lay: Layout, args: argparse.Namespace) -> dict:
    """Build (or reuse) the venv of an installed release's offline wheels, before anything is stopped.

    A failure leaves the running release untouched; it marks this version failed unless the device
    ran out of disk or memory (then the cause is reported and the same bundle can come again).
    """
    require_lock(lay, args.token)
    version = args.version
    release = os.path.join(lay.releases, version or "")
    if not version or not safe_relpath(version) or "/" in version or not os.path.isdir(release):
        raise AgentError(f"release {version} is not installed", RC_REFUSED)
    base = args.python or _configured_python(lay) or sys.executable
    t0 = time.monotonic()
    with work_lock(lay, f"prepare {version}"):
        try:
            venv, built = ensure_venv(lay, release, base)
        except AgentError as exc:
            exc.extra["active"] = link_target(lay.current)
            if exc.rc == RC_RESOURCE:
                audit(lay, "venv_no_resource", version=version, error=str(exc)[-500:])
                raise
            mark_failed(lay, version, f"offline wheels: {exc}")
            audit(lay, "venv_failed", version=version, error=str(exc)[-500:])
            raise
        except OSError as exc:
            if not is_resource_error(exc):
                raise
            need = _wheels_need(release)
            raise resource_failure(lay, f"build the venv of {version}", str(exc), need) from None
    if built:
        audit(lay, "venv_built", version=version, venv=venv, seconds=round(time.monotonic() - t0, 1))
    return {"venv": venv, "built": built, "seconds": round(time.monotonic() - t0, 2)}


# ---------------------------------------------------------------- activate / rollback: a transaction
# state/pending.json names the new version, the old release (and the old `previous`) and the phase;
# it is written (fsync'd) before anything moves and removed only at commit, after the smoke test
# passed and the new release's own process was seen serving. While it exists, the committed release
# is its `old`. A worker that dies mid-way (kill -9, power loss) leaves it behind; the next entry
# point finishes the transaction (re-runs the smoke test) or reverts it.
def _phase(lay: Layout, rec: dict, phase: str) -> None:
    rec["phase"] = phase
    write_atomic(lay.st("pending.json"), json.dumps(rec, sort_keys=True).encode())


def _clear_pending(lay: Layout) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lay.st("pending.json"))
    fsync_dir(lay.state)


def transaction(lay: Layout, version: str, timeout: float, event: str, **opts: object) -> dict:
    """Move the device to `version`: commit it once it proves itself, else put the old one back."""
    old = link_target(lay.current)
    rec = {"version": version, "old": old, "old_previous": link_target(lay.previous), "event": event,
           "timeout": timeout, "latency_scale": lay.latency_scale, "since_boot": uptime(), **opts}
    _phase(lay, rec, "record")  # a full disk fails here, before anything moved
    fault_point("record")
    try:
        if old and old != version:
            switch_link(lay.previous, os.path.join("releases", old))
        _phase(lay, rec, "switch")
        switch_link(lay.current, os.path.join("releases", version))
        fault_point("switch")
        _phase(lay, rec, "stop-old")
        service_stop(lay)
        fault_point("stop-old")
        _phase(lay, rec, "start-new")
        lay.python = rec.get("python")  # type: ignore[assignment]
        why = start_release(lay, version)
        fault_point("start-new")
        _phase(lay, rec, "smoke")
        ok, output = check_release(lay, version, timeout) if why is None else (False, why)
        fault_point("smoke")
        if ok:
            _commit(lay, rec)
            return {"active": version, "previous": old, "smoke": output[-4000:]}
    except Exception as exc:
        restored = _revert(lay, rec)
        if is_resource_error(exc):
            raise resource_failure(lay, f"activate {version}", str(exc), restored=restored) from None
        if isinstance(exc, AgentError):
            exc.extra.setdefault("restored", restored)
        raise
    return _failed(lay, rec, output)


def _failed(lay: Layout, rec: dict, output: str) -> dict:
    """The new release did not prove itself: put the old one back, and say why."""
    version = rec["version"]
    excerpt = log_tail(lay, 40)
    cause = resource_text(output) or resource_text(excerpt)
    if not cause and rec.get("mark_failed"):
        mark_failed(lay, version, output)
    restored = _revert(lay, rec)
    audit(lay, "smoke_failed", version=version, restored=restored, resource=cause)
    if cause:
        raise resource_failure(lay, f"start {version}", f"{cause}: {output[-300:]}", restored=restored)
    raise AgentError(
        f"release {version} failed its smoke test",
        RC_SMOKE,
        smoke=output[-2000:],
        log=excerpt,
        restored=restored,
    )


def _commit(lay: Layout, rec: dict) -> None:
    version = rec["version"]
    _phase(lay, rec, "commit")
    if rec.get("python"):
        write_atomic(lay.st("service.json"), json.dumps({"python": rec["python"]}).encode())
    failed = read_json(lay.st("failed.json"), {})
    if isinstance(failed, dict) and failed.pop(version, None) is not None:
        write_atomic(lay.st("failed.json"), json.dumps(failed, indent=2, sort_keys=True).encode())
    if rec.get("target"):
        write_atomic(lay.st("device.json"), json.dumps({"target": rec["target"]}).encode())
    fault_point("commit")
    _clear_pending(lay)  # the commit point
    scaled = {"latency_scale": lay.latency_scale} if lay.latency_scale != 1 else {}
    took = round(uptime() - float(rec.get("since_boot", uptime())), 1)
    event = str(rec.get("event", "activate"))
    audit(lay, event, version=version, previous=rec.get("old"), seconds=took, **scaled)


def _revert(lay: Layout, rec: dict) -> str | None:
    """Back to the old release (current, previous, the service); the version that serves again."""
    with contextlib.suppress(OSError):
        _phase(lay, rec, "revert")
    old, prev = rec.get("old"), rec.get("old_previous")
    lay.python = None
    restored = None
    if old and os.path.isdir(os.path.join(lay.releases, old)):
        switch_link(lay.current, os.path.join("releases", old))
        if serving(lay) == old:
            restored = old
        else:
            with contextlib.suppress(AgentError, OSError):
                why = start_release(lay, old)
                if why is None and check_release(lay, old, float(rec.get("timeout", 60)))[0]:
                    restored = old
    else:
        service_stop(lay)
        remove_link(lay.current)
    if prev:
        switch_link(lay.previous, os.path.join("releases", prev))
    else:
        remove_link(lay.previous)
    _clear_pending(lay)
    return restored


def resolve_pending(lay: Layout) -> dict | None:
    """Finish (smoke again, commit) a switched transaction whose worker died, else revert it."""
    rec = pending(lay)
    if rec is None:
        if os.path.exists(lay.st("pending.json")):  # unreadable (written atomically, so not by us)
            audit(lay, "pending_unreadable", current=link_target(lay.current))
            _clear_pending(lay)
        return None
    version, phase = rec["version"], rec.get("phase")
    lay.latency_scale = float(rec.get("latency_scale", 1.0))
    timeout = float(rec.get("timeout", 60))
    finish = phase != "revert" and link_target(lay.current) == version
    outcome, restored, output = "reverted", None, ""
    if finish and os.path.isdir(os.path.join(lay.releases, version)):
        try:
            lay.python = rec.get("python")
            # serving already (killed at smoke): smoke it again; else (or with no pidfile to manage it
            # by, killed right after the start) start it afresh
            up = serving(lay) == version and (_systemd_mode() or service_pid(lay) is not None)
            why = None if up else start_release(lay, version)
            ok, output = check_release(lay, version, timeout) if why is None else (False, why)
        except (AgentError, OSError) as exc:
            ok, output = False, f"could not start {version}: {exc}"
        if ok:
            _commit(lay, rec)
            outcome = "finished"
        else:
            cause = resource_text(output) or resource_text(log_tail(lay, 40))
            if not cause and rec.get("mark_failed") and not output.startswith("could not start"):
                mark_failed(lay, version, output)
            restored = _revert(lay, rec)
    else:
        restored = _revert(lay, rec)
    result = {"version": version, "old": rec.get("old"), "phase": phase, "outcome": outcome,
              "restored": restored, "serving": serving(lay)}
    audit(lay, "pending_resolved", **result, why=output[-300:])
    return result


def settle(lay: Layout) -> dict | None:
    """What probe and status do first: resolve a transaction left by a dead worker; a live worker's
    transaction is reported as in progress, not touched."""
    if not os.path.isfile(lay.st("pending.json")):
        return None
    try:
        with work_lock(lay, "resolve a pending activation"):
            return resolve_pending(lay)
    except AgentError:
        rec, worker = pending(lay) or {}, _lock_info(lay, "work.lock") or {}
        return {"version": rec.get("version"), "phase": rec.get("phase"), "outcome": "in-progress",
                "worker": worker.get("work"), "worker_pid": worker.get("pid"), "for": worker.get("held_for")}


def cmd_activate(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    version = args.version
    with work_lock(lay, f"activate {version}"):
        resolved = resolve_pending(lay)
        if not version or not safe_relpath(version) or not os.path.isdir(os.path.join(lay.releases, version)):
            raise AgentError(f"release {version} is not installed", RC_REFUSED)
        res = transaction(lay, version, args.timeout, "activate", python=args.python, target=args.target,
                          mark_failed=True)
    return dict(res, resolved=resolved)


def cmd_rollback(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    with work_lock(lay, "rollback"):
        resolved = resolve_pending(lay)
        cur, target = link_target(lay.current), args.to or link_target(lay.previous)
        if not target or not safe_relpath(target) or not os.path.isdir(os.path.join(lay.releases, target)):
            raise AgentError("there is no previous release to roll back to", RC_REFUSED)
        try:
            res = transaction(lay, target, args.timeout, "rollback", from_version=cur)
        except AgentError as exc:
            if exc.rc == RC_SMOKE:
                back = exc.extra.get("restored")
                exc.args = (f"release {target} is not healthy; {back or 'nothing'} serves again",)
            raise
    return {"active": target, "previous": cur, "resolved": resolved, "smoke": res.get("smoke", "")}


def cmd_boot(lay: Layout, args: argparse.Namespace) -> dict:
    """Run at boot (init script, cron @reboot, a supervisor, or llmos-agent-boot.service): resolve a
    transaction a power loss interrupted, then make sure the committed release serves."""
    if not os.path.isdir(lay.releases):
        return {"resolved": None, "committed": None, "serving": None, "started": False}
    with work_lock(lay, "boot"):
        resolved = resolve_pending(lay)
        cur = link_target(lay.current)
        started = False
        if cur and os.path.isdir(os.path.join(lay.releases, cur)):
            if _systemd_mode() and wait_healthy(lay, cur, args.timeout) is None and serving(lay) == cur:
                pass  # systemd started the unit itself
            elif serving(lay) != cur:
                why = start_release(lay, cur)
                if why is None:
                    why = wait_healthy(lay, cur, args.timeout)
                if why is not None:
                    audit(lay, "boot_failed", version=cur, why=why[-500:])
                    msg = f"the committed release {cur} did not start: {why}"
                    raise AgentError(msg, 1, log=log_tail(lay, 40))
                started = True
        now = serving(lay)
        audit(lay, "boot", committed=cur, serving=now, started=started, resolved=resolved)
    return {"resolved": resolved, "committed": cur, "serving": now, "started": started}


