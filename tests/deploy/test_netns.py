"""Fleet of namespace devices with one broken (canary), and real link cuts (ip link set down)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.deploy import commands
from llmos_edge.deploy.fleet import load_inventory, run_fleet
from llmos_edge.deploy.preflight import PreflightOptions
from llmos_edge.deploy.run import DeployOptions, Events
from llmos_edge.deploy.source import load_bundle
from llmos_edge.errors import DeviceError
from llmos_edge.transports.ssh import SshOptions

from .bundles import make_bundle, payload
from .helpers import run_deploy
from .netns import RUNTIME_PORT, NetnsDevice, squat_port, start_netns_device

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]


@pytest.fixture
def ns_devices(tmp_path: Path, client_key: tuple[Path, Path]) -> Iterator[list[NetnsDevice]]:
    devs: list[NetnsDevice] = []
    try:
        for i in range(3):
            d = tmp_path / f"ns{i}"
            d.mkdir()
            devs.append(start_netns_device(d, client_key[0], client_key[1]))
        yield devs
    finally:
        for dev in devs:
            dev.stop()


def _inventory(tmp: Path, devs: list[NetnsDevice]) -> Path:
    lines = []
    for i, d in enumerate(devs):
        lines += [
            "[[device]]",
            f'name = "dev-{i}"',
            f'address = "{d.address}"',
            'target = "host"',
            "[device.vars]",
            f'root = "{d.root}"',
            f'site = "shelf-{i}"',
            "",
        ]
    inv = tmp / "fleet.toml"
    inv.write_text("\n".join(lines))
    return inv


def test_fleet_canary_stops_after_broken_device(
    ns_devices: list[NetnsDevice], tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("".join(d.host_key_line() for d in ns_devices))
    bundle = make_bundle(tmp_path / "b", "1.0.0", port=RUNTIME_PORT, host="0.0.0.0", key=signing_key[0])
    squatter = squat_port(ns_devices[1], RUNTIME_PORT)  # device 1 is broken
    try:
        inv = load_inventory(_inventory(tmp_path, ns_devices))
        src = load_bundle(bundle, signing_key[1], allow_unsigned=False)
        ssh = SshOptions(known_hosts=known, identity=ns_devices[0].identity)
        result = asyncio.run(
            run_fleet(inv, src, DeployOptions(smoke_timeout=10), ssh, parallel=1, max_failures=1)
        )
    finally:
        squatter.kill()
        squatter.wait()
    statuses = [r.status for r in result.reports]
    assert statuses == ["ok", "rolled-back", "skipped"]
    assert result.stopped_by_canary and not result.ok
    report = json.loads(json.dumps(result.to_json()))
    assert report["summary"] == {"ok": 1, "rolled-back": 1, "skipped": 1}
    assert report["devices"][1]["device"] == "dev-1" and "smoke" in report["devices"][1]["message"]
    assert "site=shelf-1" in report["devices"][1]["notes"] or report["devices"][1]["status"] == "rolled-back"
    assert ns_devices[0].serving() == "1.0.0"
    assert ns_devices[2].current() is None  # never touched
    assert not Path(ns_devices[2].root).exists()
    # device 1 repaired: the re-run, 3 at once, brings the fleet up to date
    rerun_opts = DeployOptions(smoke_timeout=10, preflight=PreflightOptions(retry_failed=True))
    again = asyncio.run(run_fleet(inv, src, rerun_opts, ssh, parallel=3, max_failures=1))
    assert [r.status for r in again.reports] == ["up-to-date", "ok", "ok"] and again.ok
    assert [d.serving() for d in ns_devices] == ["1.0.0"] * 3


class CutLink(Events):
    def __init__(self, dev: NetnsDevice, fraction: float) -> None:
        self.dev, self.fraction, self.total, self.done, self.cut = dev, fraction, 0, 0, False

    def start_bytes(self, total: int) -> None:
        self.total = total

    def advance(self, n: int) -> None:
        self.done += n
        if not self.cut and self.done >= self.fraction * self.total:
            self.cut = True
            self.dev.cut()


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_link_cut_mid_transfer(
    ns_devices: list[NetnsDevice], tmp_path: Path, signing_key: tuple[Path, Path], fraction: float
) -> None:
    dev = ns_devices[0]
    out = tmp_path / "b"
    shards = {f"models/fake/shard-{i}.bin": payload(3_000_000, 50 + i) for i in range(3)}
    run_deploy(
        dev, make_bundle(out, "1.0.0", port=RUNTIME_PORT, host="0.0.0.0", key=signing_key[0]), signing_key[1]
    )
    b2 = make_bundle(out, "2.0.0", port=RUNTIME_PORT, host="0.0.0.0", key=signing_key[0], extra_files=shards)
    cut = CutLink(dev, fraction)
    t0 = time.monotonic()
    with pytest.raises(DeviceError):
        run_deploy(dev, b2, signing_key[1], events=cut)
    assert cut.cut and time.monotonic() - t0 < 30
    dev.restore()
    assert dev.serving(timeout=10) == "1.0.0" and dev.current() == "1.0.0"
    _wait_lock_free(dev)
    rep = run_deploy(dev, b2, signing_key[1])
    assert rep.status == "ok" and dev.serving() == "2.0.0"
    assert rep.bytes_sent == rep.bytes_needed < cut.total


def _wait_lock_free(dev: NetnsDevice, timeout: float = 20) -> None:
    """The device's sshd ends the dead session (ClientAliveInterval), which frees the lock."""
    deadline = time.monotonic() + timeout
    while True:
        st = asyncio.run(commands.status(dev.address, dev.options(), dev.root))
        if st["lock"] is None:
            return
        assert time.monotonic() < deadline, f"lock never freed: {st['lock']}"
        time.sleep(0.5)
