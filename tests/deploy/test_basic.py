"""First deploy, redeploy, content addressing, device commands."""

from __future__ import annotations

from pathlib import Path

from .conftest import BundleFactory
from .devices import Device
from .helpers import run_deploy


def test_first_deploy_serves_and_redeploy_sends_only_changes(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    b1 = bundle_for(device, "1.0.0", model_size=2_000_000)
    r1 = run_deploy(device, b1, signing_key[1])
    assert r1.status == "ok" and device.current() == "1.0.0"
    assert device.serving() == "1.0.0"
    assert r1.bytes_sent == r1.bytes_total
    b2 = bundle_for(device, "1.0.1", model_size=2_000_000)  # same model bytes, new config tag
    r2 = run_deploy(device, b2, signing_key[1])
    assert device.serving() == "1.0.1"
    assert r2.previous == "1.0.0" and r2.files_reused > 0
    assert r2.bytes_sent < 0.01 * r2.bytes_total
    assert (Path(device.root) / "previous").resolve().name == "1.0.0"
