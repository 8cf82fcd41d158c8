"""Activation is a transaction: kills inside it, a smoke-failing release killed mid-check, an orphaned
activate against a rollback. Real sshd devices; the agent kills itself (SIGKILL) at a named point when
the test's device sshd hands it LLMOS_AGENT_FAULT_FILE (tests/deploy/devices.py), as a kill -9 would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.deploy import commands
from llmos_edge.deploy.remote import AgentFailed
from llmos_edge.deploy.run import DeployOptions, Events, SmokeFailed, deploy_to
from llmos_edge.deploy.source import load_bundle
from llmos_edge.device.protocol import PHASES, RC_LOCKED
from llmos_edge.errors import DeviceError

from .conftest import BundleFactory
from .devices import Device
from .helpers import run_deploy


def status(dev: Device) -> dict[str, Any]:
    return asyncio.run(commands.status(dev.address, dev.options(), dev.root))


def audit(dev: Device) -> list[dict[str, Any]]:
    return [json.loads(line) for line in dev.state("audit.jsonl").read_text().splitlines()]


def assert_truthful(st: dict[str, Any], dev: Device) -> None:
    """status names the committed release and what really answers on the port; a gap is spelled out."""
    assert st["serving"] == dev.serving(timeout=2)
    assert st["current"] == dev.current() or st["pending"] is not None
    if st["discrepancy"] is None:
        assert st["current"] == st["serving"] and st["pending"] is None


def assert_converged(dev: Device, version: str) -> None:
    st = status(dev)
    assert (st["current"], st["serving"], st["pending"], st["discrepancy"]) == (version, version, None, None)
    assert dev.current() == version and dev.serving() == version
    assert not dev.state("pending.json").exists()


@pytest.mark.parametrize("phase", PHASES)
def test_kill_inside_activate_next_plain_deploy_converges(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], phase: str
) -> None:
    pub = signing_key[1]
    run_deploy(device, bundle_for(device, "1.0.0"), pub)
    b2 = bundle_for(device, "2.0.0", seed=2)
    device.faults(phase)
    with pytest.raises(DeviceError, match="gave no answer"):
        run_deploy(device, b2, pub)
    record = json.loads(device.state("pending.json").read_text())
    assert (record["version"], record["old"], record["phase"]) == ("2.0.0", "1.0.0", phase)
    assert device.state("pending.json").stat().st_size > 0
    device.faults()
    report = run_deploy(device, b2, pub)  # the user's next plain deploy, nothing done by hand
    assert report.status in ("ok", "up-to-date")
    assert any("unfinished activation of 2.0.0" in n for n in report.notes), report.notes
    assert_converged(device, "2.0.0")
    assert status(device)["previous"] == "1.0.0"
    failed = device.state("failed.json")
    assert not failed.exists() or "2.0.0" not in json.loads(failed.read_text())
    resolved = [e for e in audit(device) if e["event"] == "pending_resolved"]
    assert len(resolved) == 1 and resolved[0]["phase"] == phase
    # switched already: finished with a fresh smoke test; not switched: reverted, then deployed anew
    assert resolved[0]["outcome"] == ("reverted" if phase == "record" else "finished")


def test_status_resolves_and_never_claims_an_unserved_release(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """Killed right after the switch: `current` names 2.0.0 while 1.0.0 serves. status resolves it."""
    pub = signing_key[1]
    run_deploy(device, bundle_for(device, "1.0.0"), pub)
    device.faults("switch")
    with pytest.raises(DeviceError):
        run_deploy(device, bundle_for(device, "2.0.0", seed=2), pub)
    assert device.current() == "2.0.0" and device.serving() == "1.0.0"  # the torn state of issue 12 (b)
    device.faults()
    st = status(device)
    assert st["resolved"]["outcome"] == "finished" and st["resolved"]["phase"] == "switch"
    assert_truthful(st, device)
    assert st["current"] == st["serving"] == "2.0.0"


def test_smoke_failing_release_killed_mid_check_is_marked_failed(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    pub = signing_key[1]
    run_deploy(device, bundle_for(device, "1.0.0"), pub)
    bad = bundle_for(device, "2.0.0", seed=2, behaviour="smoke-fail")
    device.faults("smoke")
    with pytest.raises(DeviceError):
        run_deploy(device, bad, pub)
    device.faults()
    st = status(device)  # re-runs the smoke test, which fails: marked failed, 1.0.0 back
    assert st["resolved"]["outcome"] == "reverted" and st["resolved"]["restored"] == "1.0.0"
    assert_truthful(st, device)
    assert st["current"] == st["serving"] == "1.0.0"
    assert "2.0.0" in st["failed"] and st["previous"] is None  # the old `previous` is back
    with pytest.raises(Exception, match="already failed"):
        run_deploy(device, bad, pub)


class CutAtActivate(Events):
    def __init__(self) -> None:
        self.activating = asyncio.Event()

    def phase(self, name: str) -> None:
        if name == "activate":
            self.activating.set()


async def _orphan_then_rollback(dev: Device, bundle: Path, pub: Path) -> tuple[Exception | None, float]:
    src = load_bundle(bundle, pub, allow_unsigned=False)
    gate = CutAtActivate()
    task = asyncio.create_task(deploy_to(dev.address, src, DeployOptions(root=dev.root, smoke_timeout=5),
                                         dev.options(), gate))
    await gate.activating.wait()
    await asyncio.sleep(1.0)
    task.cancel()  # the deployer goes away: its connection closes, the device-side activate runs on
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = time.monotonic()
    try:
        await commands.rollback(dev.address, dev.options(), dev.root, timeout=20)
    except AgentFailed as exc:
        return exc, time.monotonic() - t0
    return None, time.monotonic() - t0


def test_orphaned_activate_and_rollback_never_overlap(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    pub = signing_key[1]
    run_deploy(device, bundle_for(device, "1.0.0"), pub)
    run_deploy(device, bundle_for(device, "1.1.0", seed=3), pub)
    hang = bundle_for(device, "2.0.0", seed=2, behaviour="smoke-hang")
    err, waited = asyncio.run(_orphan_then_rollback(device, hang, pub))
    assert err is None, err
    assert waited > 2  # it waited for the orphan's smoke timeout instead of running beside it
    events = [e["event"] for e in audit(device)]
    # the orphan finished (its release failed, 1.1.0 back) before the rollback started
    assert events.index("smoke_failed") < events.index("rollback")
    failed = json.loads(device.state("failed.json").read_text())
    assert list(failed) == ["2.0.0"]  # the healthy releases are never marked failed
    assert_converged(device, "1.0.0")


def test_lock_message_names_holder_and_device_measured_age(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """A rollback while another deploy holds the device is told who, and for how long on the device's
    own clock (not a raw device timestamp)."""
    pub = signing_key[1]
    run_deploy(device, bundle_for(device, "1.0.0"), pub)
    run_deploy(device, bundle_for(device, "1.1.0", seed=3), pub)

    async def go() -> AgentFailed:
        from llmos_edge.deploy.remote import Agent
        from llmos_edge.transports.ssh import connect

        t = await connect(device.address, device.options())
        holder = await Agent(t, device.root).hold("tok", "someone@else", 600)
        try:
            await asyncio.sleep(1.2)
            with pytest.raises(AgentFailed) as info:
                await commands.rollback(device.address, device.options(), device.root, timeout=20)
            return info.value
        finally:
            await holder.close()
            await t.close()

    exc = asyncio.run(go())
    assert exc.rc == RC_LOCKED and exc.exit_code == 3
    assert "someone@else" in exc.message and "measured on the device" in exc.message
    assert float(exc.payload["held_for"]) >= 1.0
    assert_converged(device, "1.1.0")


def test_failing_smoke_marks_failed_and_keeps_old(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """No kill: the transaction's own failure path, and `previous` restored to what it was."""
    pub = signing_key[1]
    run_deploy(device, bundle_for(device, "1.0.0"), pub)
    run_deploy(device, bundle_for(device, "1.1.0", seed=3), pub)
    with pytest.raises(SmokeFailed):
        run_deploy(device, bundle_for(device, "2.0.0", seed=2, behaviour="smoke-fail"), pub, smoke_timeout=4)
    st = status(device)
    assert (st["current"], st["serving"], st["previous"]) == ("1.1.0", "1.1.0", "1.0.0")
    assert not device.state("pending.json").exists()


@pytest.mark.parametrize(
    "record",
    [
        b"{{{",
        b"[" * 60_000,
        b" " * 70_000 + b"{}",
        json.dumps({"version": "../../etc", "old": "1.0.0", "phase": "switch"}).encode(),
        json.dumps({"version": "2.0.0", "old": "../x", "old_previous": None, "phase": "switch"}).encode(),
        json.dumps({"version": ["2.0.0"], "old": "1.0.0"}).encode(),
    ],
    ids=["torn", "deep", "oversize", "version-escape", "old-escape", "not-a-name"],
)
def test_hostile_pending_record_is_dropped_not_followed(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], record: bytes
) -> None:
    """A pending record the agent did not write (it writes atomically) moves nothing: dropped, audited."""
    run_deploy(device, bundle_for(device, "1.0.0"), signing_key[1])
    path = device.state("pending.json")
    path.write_bytes(record)
    os.chown(path, *owner(device))
    st = status(device)
    assert (st["current"], st["serving"], st["pending"], st["discrepancy"]) == ("1.0.0", "1.0.0", None, None)
    assert not path.exists() and audit(device)[-1]["event"] == "pending_unreadable"


def owner(dev: Device) -> tuple[int, int]:
    info = os.stat(dev.root)
    return info.st_uid, info.st_gid


def test_up_to_date_means_committed_and_serving(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """The committed release's runtime died: status says so, and the same deploy starts it again."""
    pub = signing_key[1]
    b1 = bundle_for(device, "1.0.0")
    run_deploy(device, b1, pub)
    assert run_deploy(device, b1, pub).status == "up-to-date"
    device.stop_runtime()
    st = status(device)
    assert st["current"] == "1.0.0" and st["serving"] is None and st["listening"] is False
    assert "committed release 1.0.0 is not serving" in st["discrepancy"]
    report = run_deploy(device, b1, pub)
    assert report.status == "ok" and any("committed but not serving" in n for n in report.notes)
    assert_converged(device, "1.0.0")
