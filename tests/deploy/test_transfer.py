"""Cut transfers resume; corrupt staging files are caught, re-sent and never activated."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from llmos_edge.errors import DeviceError

from .bundles import payload
from .conftest import BundleFactory
from .devices import Device
from .helpers import CutAt, run_deploy

SHARDS = {f"models/fake/shard-{i}.bin": payload(1_500_000, 100 + i) for i in range(4)}


def staged(dev: Device) -> dict[str, int]:
    folder = Path(dev.root) / "staging"
    return {p.name: p.stat().st_size for p in folder.iterdir()} if folder.is_dir() else {}


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_cut_keeps_old_release_and_resume_sends_only_missing(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], fraction: float
) -> None:
    run_deploy(device, bundle_for(device, "1.0.0"), signing_key[1])
    b2 = bundle_for(device, "2.0.0", extra_files=SHARDS)
    cut = CutAt(fraction)
    with pytest.raises(DeviceError, match="lost the connection"):
        run_deploy(device, b2, signing_key[1], events=cut)
    assert device.current() == "1.0.0" and device.serving() == "1.0.0"
    assert not (Path(device.root) / "releases" / "2.0.0").exists()
    on_device = sum(staged(device).values())
    assert on_device > 0
    rep = run_deploy(device, b2, signing_key[1])
    assert rep.status == "ok" and device.serving() == "2.0.0"
    # the resumed run sent exactly what the device still lacked, and less than a full send
    assert rep.bytes_sent == rep.bytes_needed
    first_needed = cut.total
    assert rep.bytes_sent <= first_needed - on_device + 1
    assert rep.bytes_sent < first_needed
    assert staged(device) == {}


def test_bit_flip_and_truncation_in_staging_are_resent_never_activated(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    run_deploy(device, bundle_for(device, "1.0.0"), signing_key[1])
    b2 = bundle_for(device, "2.0.0", extra_files=SHARDS)
    with pytest.raises(DeviceError):
        run_deploy(device, b2, signing_key[1], events=CutAt(1.0))  # everything sent, nothing committed
    parts = sorted(Path(device.root, "staging").glob("*.part"), key=lambda p: -p.stat().st_size)
    flipped, truncated = parts[0], parts[1]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 3)
    flipped_sha = flipped.name.split(".")[0]
    rep = run_deploy(device, b2, signing_key[1])
    assert rep.status == "ok" and device.serving() == "2.0.0"
    assert flipped_sha in rep.resent
    release = Path(device.root) / "releases" / "2.0.0"
    for rel, data_ok in SHARDS.items():
        assert hashlib.sha256((release / rel).read_bytes()).digest() == hashlib.sha256(data_ok).digest()
    assert "staging_corrupt" in device.state("audit.jsonl").read_text()


def test_corrupt_store_blob_is_caught_at_install_and_resent(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    run_deploy(device, bundle_for(device, "1.0.0", extra_files=SHARDS), signing_key[1])
    sha = hashlib.sha256(SHARDS["models/fake/shard-0.bin"]).hexdigest()
    blob = Path(device.root) / "store" / "sha256" / sha
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:  # bit rot in the store (shared with release 1.0.0 by a hardlink)
        f.seek(1000)
        f.write(b"\xff")
    rep = run_deploy(device, bundle_for(device, "2.0.0", extra_files=SHARDS), signing_key[1])
    assert rep.status == "ok" and sha in rep.resent
    release = Path(device.root) / "releases" / "2.0.0" / "models/fake/shard-0.bin"
    assert hashlib.sha256(release.read_bytes()).hexdigest() == sha
