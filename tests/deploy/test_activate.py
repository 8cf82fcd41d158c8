"""Smoke failure rolls back; locks; device commands (status, rollback, logs, releases)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from llmos_edge.deploy import commands
from llmos_edge.deploy.remote import Agent, AgentFailed
from llmos_edge.deploy.run import DeployOptions, Events, SmokeFailed, deploy_to
from llmos_edge.deploy.source import load_bundle
from llmos_edge.errors import UserError
from llmos_edge.transports.ssh import connect

from .conftest import BundleFactory
from .devices import Device
from .helpers import run_deploy


@pytest.mark.parametrize(
    ("behaviour", "in_output"),
    [
        ("smoke-fail", "golden answer mismatch"),
        ("crash", "crashing on purpose"),
        ("smoke-hang", "timed out"),
    ],
)
def test_failing_smoke_rolls_back_and_old_serves(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], behaviour: str, in_output: str
) -> None:
    run_deploy(device, bundle_for(device, "1.0.0"), signing_key[1])
    bad = bundle_for(device, "2.0.0", behaviour=behaviour)
    with pytest.raises(SmokeFailed) as info:
        run_deploy(device, bad, signing_key[1], smoke_timeout=4)
    exc = info.value
    assert exc.restored == "1.0.0" and exc.exit_code == 4
    assert in_output in exc.smoke + exc.log
    assert device.current() == "1.0.0" and device.serving() == "1.0.0"
    failed = json.loads(device.state("failed.json").read_text())
    assert "2.0.0" in failed
    # a fleet (or a person) does not re-push the failed release by accident
    with pytest.raises(UserError, match="already failed"):
        run_deploy(device, bad, signing_key[1])


def test_first_release_failing_leaves_nothing_active(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    with pytest.raises(SmokeFailed) as info:
        run_deploy(device, bundle_for(device, "1.0.0", behaviour="smoke-fail"), signing_key[1])
    assert info.value.restored is None and device.current() is None and device.serving(timeout=0.5) is None


class Gate(Events):
    """Tells the second deploy to start once the first holds the lock and is sending."""

    def __init__(self) -> None:
        self.locked = asyncio.Event()

    def phase(self, name: str) -> None:
        if name == "transfer":
            self.locked.set()


async def _two_deploys(dev: Device, b1: Path, b2: Path, pub: Path) -> tuple[object, object]:
    gate = Gate()
    opts = DeployOptions(root=dev.root, smoke_timeout=20)
    src1, src2 = load_bundle(b1, pub, allow_unsigned=False), load_bundle(b2, pub, allow_unsigned=False)

    async def first() -> object:
        return await deploy_to(dev.address, src1, opts, dev.options(), gate)

    async def second() -> object:
        await gate.locked.wait()
        try:
            return await deploy_to(dev.address, src2, opts, dev.options())
        except Exception as exc:
            return exc

    won, lost = await asyncio.gather(first(), second())
    return won, lost


def test_two_concurrent_deploys_one_wins_other_is_told(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    b1 = bundle_for(device, "1.0.0", model_size=30_000_000)
    b2 = bundle_for(device, "1.0.1", model_size=1000, seed=7)
    won, lost = asyncio.run(_two_deploys(device, b1, b2, signing_key[1]))
    assert getattr(won, "status", None) == "ok"
    assert isinstance(lost, AgentFailed) and lost.exit_code == 3
    assert "is locked by" in lost.message and "held for" in lost.message and "pid" in lost.message
    assert device.serving() == "1.0.0"
    # once the winner's session is over, the lock is free again
    assert run_deploy(device, b2, signing_key[1]).status == "ok"


async def _hold_then_cut(dev: Device, ttl: float) -> None:
    t = await connect(dev.address, dev.options())
    agent = Agent(t, dev.root)
    await agent.hold("stuck-token", "stuck-deployer", ttl)
    await asyncio.sleep(ttl + 0.2)
    # a second deployer finds the holder older than its ttl: the stuck holder is ended, lock taken
    t2 = await connect(dev.address, dev.options())
    holder2 = await Agent(t2, dev.root).hold("new-token", "second", 60)
    await holder2.close()
    await t2.close()
    await t.close()


def test_stale_lock_expires(device: Device) -> None:
    asyncio.run(_hold_then_cut(device, ttl=1.0))
    assert "lock_expired" in device.state("audit.jsonl").read_text()


def test_device_commands(device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]) -> None:
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        run_deploy(device, bundle_for(device, v, seed=int(v.replace(".", ""))), signing_key[1])
    opts = device.options()
    st = asyncio.run(commands.status(device.address, opts, device.root))
    assert st["current"] == "1.3.0" and st["previous"] == "1.2.0" and st["listening"] is True
    assert st["lock"] is None and len(st["releases"]) == 4
    rb = asyncio.run(commands.rollback(device.address, opts, device.root, timeout=20))
    assert rb["active"] == "1.2.0" and device.serving() == "1.2.0"
    logs = asyncio.run(commands.logs(device.address, opts, device.root, lines=200))
    assert "fake runtime 1.2.0 listening" in logs["log"]
    assert any(e["event"] == "rollback" for e in logs["audit"])
    pruned = asyncio.run(commands.releases(device.address, opts, device.root, keep=1))
    assert sorted(pruned["removed"]) == ["1.0.0", "1.1.0"]
    left = {r["version"] for r in pruned["releases"]}
    assert left == {"1.2.0", "1.3.0"}  # current and previous always stay
    assert device.serving() == "1.2.0"


def test_runtime_that_cannot_start_rolls_back(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """A wrong --device-python for the new release: it never starts; the old one runs with its python."""
    run_deploy(device, bundle_for(device, "1.0.0"), signing_key[1])
    with pytest.raises(SmokeFailed) as info:
        run_deploy(device, bundle_for(device, "2.0.0"), signing_key[1], device_python="/nonexistent/python3")
    assert "could not start" in info.value.smoke and info.value.restored == "1.0.0"
    assert device.serving() == "1.0.0"
    assert not device.state("service.json").exists()
