"""Full guest: the real `llmos-edge deploy` against the aarch64 QEMU guest (and a real board if configured).

A tiny real model keeps the default run short; `python -m ci.hil all` does the same with SmolLM2.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ci.devices import HilDevice
from ci.qemu import deploy as hil
from ci.qemu.guest import QemuGuest

BundleFactory = Callable[..., Path]  # the bundle_for fixture in conftest.py



@pytest.mark.hil_cost(300)
@pytest.mark.timeout(300, func_only=True)
def test_guest_is_aarch64_with_pinned_host_key(qemu_guest: QemuGuest, tmp_path: Path) -> None:
    out = qemu_guest.ssh(["sh", "-c", "uname -m; python3 -c 'import sys; print(sys.version_info[:2])'"])
    assert out.stdout.split()[0] == "aarch64"
    assert "(3, 11)" in out.stdout
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    refused = subprocess.run([*qemu_guest.ssh_base(known_hosts=empty), "true"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "Host key verification failed" in refused.stderr


@pytest.mark.hil_cost(600)
@pytest.mark.timeout(600, func_only=True)
def test_preflight_refuses_wrong_arch_and_wrong_python(
        hil_device: HilDevice, bundle_for: BundleFactory, signing_pair: tuple[Path, Path]) -> None:
    armv7 = bundle_for("0.1.0", target="rpi3-armv7", wheels=False)
    r1 = hil.deploy(hil_device, armv7, signing_pair[1], target="rpi3-armv7")
    assert r1.rc == 2, r1.text  # UserError, refused before any transfer
    assert "built for armv7l" in r1.text and "aarch64" in r1.text
    py312 = bundle_for("0.1.0", python="3.12")
    r2 = hil.deploy(hil_device, py312, signing_pair[1])
    assert r2.rc == 2, r2.text
    assert "needs Python 3.12" in r2.text and "3.11" in r2.text
    st = hil.status(hil_device)
    assert not st.get("current") and not st.get("releases")  # refused before anything was installed


@pytest.mark.hil_cost(1800)
@pytest.mark.timeout(1800, func_only=True)  # = hil_cost; measured 490 s quiet (guest venv build ~340 s)
def test_deploy_smoke_passes_then_failing_smoke_rolls_back(
        hil_device: HilDevice, bundle_for: BundleFactory, signing_pair: tuple[Path, Path]) -> None:
    good = hil.deploy(hil_device, bundle_for("1.0.0"), signing_pair[1])  # smoke timing scaled under QEMU
    assert good.rc == 0 and good.report and good.report["status"] == "ok", good.text
    st = hil.status(hil_device)
    assert st["current"] == "1.0.0" and st.get("listening")
    bad = hil.deploy(hil_device, bundle_for("1.1.0", expect=("zebra-quantum-never",)),
                     signing_pair[1])
    assert bad.rc == 4, bad.text  # CheckFailed: the smoke test said no
    assert "rolled back to 1.0.0" in bad.text
    st = hil.status(hil_device)
    assert st["current"] == "1.0.0", st  # rolled back in the guest
    assert "1.1.0" in (st.get("failed") or {})
    assert st.get("listening")  # and the old release serves again
