"""A full disk at transfer, venv build and activate: the cause is reported (exit 3, with what to free),
the old release keeps serving, the version is not marked failed, no temp file stays, and the next
deploy after space is freed succeeds.

The device root is a real small tmpfs mounted for the test; the disk is filled (a real fallocate'd
file) at the named phase of a real deploy, from the host side's progress callback.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.deploy.remote import AgentFailed
from llmos_edge.deploy.run import Events
from llmos_edge.device.protocol import RC_RESOURCE

from .conftest import BundleFactory
from .devices import Device, ensure_user
from .helpers import run_deploy

MARGIN = {"disk_margin_mb": 1}  # the preflight space check passes; the disk fills afterwards


@contextlib.contextmanager
def tmpfs_root(dev: Device, size_mb: int) -> Iterator[Path]:
    root = Path(dev.root)
    root.mkdir()
    user = ensure_user()
    opts = f"size={size_mb}m,uid={user.pw_uid},gid={user.pw_gid},mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "llmos-test-full", str(root)], check=True)
    try:
        yield root
    finally:
        dev.stop_runtime()
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill(root: Path, leave: int) -> None:
    st = os.statvfs(root)
    size = max(1, st.f_bavail * st.f_frsize - leave)
    with open(root / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)


class FillAt(Events):
    """Fills the device's disk (leaving `leave` bytes) when the deploy reaches `phase`."""

    def __init__(self, phase: str, root: Path, leave: int) -> None:
        self.at, self.root, self.leave = phase, root, leave

    def phase(self, name: str) -> None:
        if name == self.at:
            fill(self.root, self.leave)


def temp_leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".new", ".partial", ".verify"))]


def assert_resource_failure(exc: AgentFailed, root: Path, dev: Device, old: str, new: str) -> None:
    assert exc.rc == RC_RESOURCE and exc.exit_code == 3
    assert "No space left on device" in exc.message, exc.message  # the cause, not a lost link
    assert any("free " in h and "on the device" in h for h in exc.hints), exc.hints
    assert any("not marked failed" in h for h in exc.hints)
    assert dev.current() == old and dev.serving() == old
    failed = root / "state" / "failed.json"
    assert not failed.exists() or new not in json.loads(failed.read_text())
    assert temp_leftovers(root) == []


def test_disk_full_during_transfer(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    pub = signing_key[1]
    with tmpfs_root(device, 24) as root:
        run_deploy(device, bundle_for(device, "1.0.0"), pub, **MARGIN)
        big = bundle_for(device, "2.0.0", seed=2, model_size=6_000_000)
        with pytest.raises(AgentFailed) as info:
            run_deploy(device, big, pub, events=FillAt("transfer", root, 1_000_000), **MARGIN)
        assert_resource_failure(info.value, root, device, "1.0.0", "2.0.0")
        assert any("free at least" in h for h in info.value.hints)
        staged = sum(p.stat().st_size for p in (root / "staging").iterdir())
        assert staged < 1_000_000  # the blob that did not fit was removed, not left half-written
        (root / "filler").unlink()
        assert run_deploy(device, big, pub, **MARGIN).status == "ok"
        assert device.serving() == "2.0.0"


def test_disk_full_at_activate(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    pub = signing_key[1]
    with tmpfs_root(device, 24) as root:
        run_deploy(device, bundle_for(device, "1.0.0"), pub, **MARGIN)
        b2 = bundle_for(device, "2.0.0", seed=2)
        with pytest.raises(AgentFailed) as info:
            run_deploy(device, b2, pub, events=FillAt("activate", root, 0), **MARGIN)
        assert_resource_failure(info.value, root, device, "1.0.0", "2.0.0")
        assert not (root / "state" / "pending.json").exists()
        (root / "filler").unlink()
        report = run_deploy(device, b2, pub, **MARGIN)
        assert report.status == "ok" and device.serving() == "2.0.0" and device.current() == "2.0.0"


def test_disk_full_during_venv_build(
    device: Device, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    from tests.deploy_wheels.conftest import make_wheel
    from tests.deploy_wheels.test_venv import answer, wheel_bundle

    key, pub = signing_key
    with tmpfs_root(device, 96) as root:
        dep1 = make_wheel(tmp_path / "w1", "llmos_probe_dep", "1.0")
        b1 = wheel_bundle(tmp_path, device, key, "1.0.0", [dep1])
        run_deploy(device, b1, pub, **MARGIN)
        dep2 = make_wheel(tmp_path / "w2", "llmos_probe_dep", "2.0")  # another wheel set: a new venv
        b2 = wheel_bundle(tmp_path, device, key, "2.0.0", [dep2])
        with pytest.raises(AgentFailed) as info:
            run_deploy(device, b2, pub, events=FillAt("venv", root, 2_000_000), **MARGIN)
        exc = info.value
        assert "ensurepip" not in " ".join(exc.hints) and "python3-venv" not in " ".join(exc.hints)
        assert "venv" in exc.message
        assert_resource_failure(exc, root, device, "1.0.0", "2.0.0")
        assert len(list((root / "venvs").iterdir())) == 1  # the cut build left nothing
        (root / "filler").unlink()
        assert run_deploy(device, b2, pub, **MARGIN).status == "ok"
        assert answer(device)["dep"] == "2.0" and device.current() == "2.0.0"


def test_out_of_memory_at_start_is_a_resource_error_not_a_failed_release(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """The new runtime cannot allocate its memory (a real MemoryError): reported as memory, exit 3,
    not marked failed (a retry after freeing memory is allowed), the old release serves again."""
    pub = signing_key[1]
    run_deploy(device, bundle_for(device, "1.0.0"), pub)
    with pytest.raises(AgentFailed) as info:
        run_deploy(device, bundle_for(device, "2.0.0", seed=2, behaviour="oom"), pub, smoke_timeout=5)
    exc = info.value
    assert exc.rc == RC_RESOURCE and exc.exit_code == 3 and "memory" in exc.message
    assert any("ran out of memory" in h for h in exc.hints) and exc.payload["restored"] == "1.0.0"
    assert device.current() == "1.0.0" and device.serving() == "1.0.0"
    failed = device.state("failed.json")
    assert not failed.exists() or "2.0.0" not in json.loads(failed.read_text())
