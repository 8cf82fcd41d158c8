"""The systemd path of the device agent, on a real systemd: a root deploy into the guest booted with systemd.

A root login makes the agent install the bundle's unit (User=llmos, MemoryMax, CPUQuota from the target)
and restart it with systemctl; a non-root login (test_guest_deploy.py) uses pidfiles instead. Boot to
ssh under systemd takes one to five minutes under TCG, so this is one test doing the whole story.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ci.devices import HilDevice
from ci.qemu import deploy as hil
from ci.qemu.cache import Timings
from ci.qemu.guest import QemuGuest
from ci.qemu.image import GuestImage

BundleFactory = Callable[..., Path]  # the bundle_for fixture in conftest.py


@pytest.fixture
def systemd_guest(guest_image: GuestImage, short_tmp: Path, hil_timings: Timings) -> Iterator[QemuGuest]:
    guest = QemuGuest(guest_image, short_tmp / "vm", init="systemd")
    guest.start(timeout=1200)
    hil_timings.add("boot to ssh (systemd)", guest.boot_seconds, False)
    try:
        yield guest
    finally:
        guest.stop()


def _unit(guest: QemuGuest) -> dict[str, str]:
    """As root: the minimal guest has no D-Bus, so only root reaches systemd (its private socket)."""
    out = guest.ssh(["systemctl", "show", "-p", "ActiveState", "-p", "User", "-p", "MemoryMax",
                     "-p", "CPUQuotaPerSecUSec", "-p", "UnitFileState", "llmos-edge"], user="root").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.hil_cost(1800)
@pytest.mark.timeout(1800, func_only=True)  # = hil_cost: measured 520 s on a quiet runner
def test_root_deploy_runs_the_unit_under_systemd_and_rolls_back(
        systemd_guest: QemuGuest, bundle_for: BundleFactory, signing_pair: tuple[Path, Path],
        tmp_path: Path) -> None:
    g = systemd_guest
    dev = HilDevice("qemu-aarch64-systemd", f"root@{g.host}:{g.port}", g.copy_key(tmp_path / "id_ed25519"),
                    g.known_hosts, "rpi5")
    good = hil.deploy(dev, bundle_for("1.0.0"), signing_pair[1])
    assert good.rc == 0 and good.report and good.report["status"] == "ok", good.text
    unit = _unit(g)
    assert unit["ActiveState"] == "active" and unit["UnitFileState"] == "enabled", unit
    assert unit["User"] == "llmos"  # the target's install.user, created by the agent as a system user
    assert unit["MemoryMax"] == str(5120 * 1024 * 1024) and unit["CPUQuotaPerSecUSec"] == "4s", unit
    owner = g.ssh(["stat", "-c", "%U %s", "/opt/llmos/state/requests.jsonl"], user="root").stdout.split()
    assert owner[0] == "llmos" and int(owner[1]) > 0  # the smoke's requests were audited by the service

    bad = hil.deploy(dev, bundle_for("1.1.0", expect=("zebra-quantum-never",)), signing_pair[1])
    assert bad.rc == 4 and "rolled back to 1.0.0" in bad.text, bad.text
    st = hil.status(dev)
    assert st["current"] == "1.0.0" and st.get("listening"), st
    assert _unit(g)["ActiveState"] == "active"
    journal = g.ssh(["journalctl", "-u", "llmos-edge", "--no-pager", "-o", "cat"], user="root").stdout
    assert journal.strip()  # the service logged to the journal, where `llmos-edge logs` reads it
