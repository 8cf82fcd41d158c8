"""The systemd boot path on a real systemd: root deploys with default flags into one aarch64 guest, real
reboots in between, on the guest's own (qcow2 overlay) disk.

Must run: every `.ci/run` runs this module and the CI time budget never skips it (marker
`hil_must_run`, tests/hil/conftest.py). One guest serves the module, so systemd boots (one to five
minutes under TCG) and the offline-wheel venv build (the agent keeps one venv per wheel set) are
paid once. The tests run in file order and each states what it needs from the device.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ci.devices import HilDevice
from ci.qemu import deploy as hil
from ci.qemu.cache import Timings
from ci.qemu.deploy import Outcome
from ci.qemu.guest import QemuGuest
from ci.qemu.image import GuestImage

BundleFactory = Callable[..., Path]  # the bundle_for fixture in conftest.py
ROOT = "/opt/llmos"  # rpi5's install.root: what the bundle's unit starts, so where a default deploy goes

pytestmark = pytest.mark.hil_must_run


@pytest.fixture(scope="module")
def systemd_guest(guest_image: GuestImage, hil_timings: Timings) -> Iterator[QemuGuest]:
    work = Path(tempfile.mkdtemp(prefix="llmos-hil-sd-", dir="/tmp"))  # short: QMP socket path limit
    guest = QemuGuest(guest_image, work / "vm", init="systemd", persistent=True)
    guest.start(timeout=1200)
    hil_timings.add("boot to ssh (systemd)", guest.boot_seconds, False)
    try:
        yield guest
    finally:
        guest.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def root_device(systemd_guest: QemuGuest) -> HilDevice:
    g = systemd_guest
    key = g.copy_key(g.workdir.parent / "id_ed25519")
    return HilDevice("qemu-aarch64-systemd", f"root@{g.host}:{g.port}", key, g.known_hosts, "rpi5")


def device(g: QemuGuest, base: HilDevice) -> HilDevice:
    """The same device after a reboot (the forwarded port changes with each QEMU start)."""
    return HilDevice(base.name, f"root@{g.host}:{g.port}", base.identity, g.known_hosts, base.target)


def sh(g: QemuGuest, script: str, timeout: float = 300) -> str:
    return g.ssh(["sh", "-c", script], user="root", timeout=timeout).stdout


def unit(g: QemuGuest) -> dict[str, str]:
    """As root: the minimal guest has no D-Bus, so only root reaches systemd (its private socket)."""
    out = g.ssh(["systemctl", "show", "-p", "ActiveState", "-p", "User", "-p", "MemoryMax", "-p",
                 "CPUQuotaPerSecUSec", "-p", "UnitFileState", "-p", "MainPID", "-p", "ExecStart",
                 "llmos-edge"], user="root").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def health(g: QemuGuest, timeout: float = 600) -> dict[str, object]:
    """GET /health inside the guest (the runtime listens on 127.0.0.1:8088 there), waiting for start."""
    probe = ("import json,sys,time,urllib.request\n"
             "end=time.monotonic()+float(sys.argv[1])\n"
             "while True:\n"
             "  try:\n"
             "    print(urllib.request.urlopen('http://127.0.0.1:8088/health',timeout=5).read().decode());break\n"
             "  except OSError:\n"
             "    if time.monotonic()>end: raise\n"
             "    time.sleep(2)\n")
    out = g.ssh(["python3", "-c", probe, str(timeout)], user="root", timeout=timeout + 60).stdout
    data: dict[str, object] = json.loads(out)
    return data


def serves_committed(g: QemuGuest, dev: HilDevice, version: str) -> dict[str, object]:
    """The unit runs `version` from its release with that release's venv; status agrees; /health answers."""
    assert health(g)  # waits for the unit's runtime to come up after boot
    st = hil.status(dev)  # `llmos-edge status` with default flags: finds /opt/llmos itself
    assert st["current"] == version and st["serving"] == version and st["listening"], st
    assert not st.get("pending") and not st.get("discrepancy"), st
    u = unit(g)
    assert u["ActiveState"] == "active" and u["UnitFileState"] == "enabled", u
    argv = sh(g, f"tr '\\0' ' ' < /proc/{u['MainPID']}/cmdline").split()
    release = f"{ROOT}/releases/{version}"
    assert argv[0] == f"{release}/venv/bin/python3" and f"{release}/config/runtime.json" in argv, argv
    venv = sh(g, f"readlink -f {release}/venv").strip()
    assert venv.startswith(f"{ROOT}/venvs/"), venv  # the agent's venv for this wheel set
    return st


def deploy_in_background(dev: HilDevice, bundle: Path, pub: Path) -> tuple[threading.Thread, list[Outcome]]:
    out: list[Outcome] = []
    t = threading.Thread(target=lambda: out.append(hil.deploy(dev, bundle, pub)), daemon=True)
    t.start()
    return t, out


@pytest.mark.timeout(2400, func_only=True)  # measured: see ci/README.md (HIL timings)
def test_default_root_deploy_serves_the_committed_release_after_reboot(
        systemd_guest: QemuGuest, root_device: HilDevice, bundle_for: BundleFactory,
        signing_pair: tuple[Path, Path]) -> None:
    g = systemd_guest
    good = hil.deploy(root_device, bundle_for("1.0.0"), signing_pair[1])  # no --root, no --service
    assert good.rc == 0 and good.report and good.report["status"] == "ok", good.text
    u = unit(g)
    assert u["User"] == "llmos"  # the target's install.user, created by the agent as a system user
    assert u["MemoryMax"] == str(5120 * 1024 * 1024) and u["CPUQuotaPerSecUSec"] == "4s", u
    assert f"path={ROOT}/current/bin/llmos-launch" in u["ExecStart"], u["ExecStart"]
    assert sh(g, f"readlink {ROOT}/current").strip() == "releases/1.0.0"
    assert sh(g, "test -e /root/llmos && echo present || echo absent").strip() == "absent"
    owner = sh(g, f"stat -c '%U %s' {ROOT}/state/requests.jsonl").split()
    assert owner[0] == "llmos" and int(owner[1]) > 0  # the smoke's requests were audited by the service
    serves_committed(g, root_device, "1.0.0")

    g.reboot()
    dev = device(g, root_device)
    serves_committed(g, dev, "1.0.0")  # systemd started it at boot, nobody deployed


@pytest.mark.timeout(2400, func_only=True)
def test_kill_inside_activate_then_reboot_resolves_the_pending_activation(
        systemd_guest: QemuGuest, root_device: HilDevice, bundle_for: BundleFactory,
        signing_pair: tuple[Path, Path]) -> None:
    g = systemd_guest
    dev = device(g, root_device)
    before = hil.status(dev)
    if not before.get("current"):  # the first test did not leave a committed release
        first = hil.deploy(dev, bundle_for("1.0.0"), signing_pair[1])
        assert first.rc == 0, first.text
        before = hil.status(dev)
    old = str(before["current"])
    new = bundle_for("2.0.0")
    thread, out = deploy_in_background(dev, new, signing_pair[1])
    phase = kill_activate_when_switched(g, thread)
    print(f"activate of 2.0.0 SIGKILLed in phase {phase}")
    thread.join(600)
    assert out and out[0].rc != 0, out  # the deploy saw its device-side work die

    g.reboot()  # a real reboot with the transaction still pending on disk
    dev = device(g, root_device)
    st = hil.status(dev)  # an entry point: resolves whatever boot left
    committed = str(st["current"])
    assert committed in (old, "2.0.0"), st  # finished (smoke re-run) or reverted, nothing else
    serves_committed(g, dev, committed)
    audit = sh(g, f"cat {ROOT}/state/audit.jsonl")
    assert '"pending_resolved"' in audit and '"2.0.0"' in audit, (phase, audit[-2000:])
    again = hil.deploy(dev, new, signing_pair[1])  # and the next deploy converges
    assert again.rc == 0, again.text
    serves_committed(g, dev, "2.0.0")


def kill_activate_when_switched(g: QemuGuest, deploy: threading.Thread, timeout: float = 1800) -> str:
    """SIGKILL the agent doing `activate` once `current` moved (phase switch..smoke); returns the phase."""
    script = ("import json,os,sys\n"
              f"try: ph=json.load(open('{ROOT}/state/pending.json')).get('phase')\n"
              "except (OSError, ValueError): sys.exit(0)\n"
              "if ph in ('stop-old','start-new','smoke'):\n"
              f"  os.kill(int(json.load(open('{ROOT}/state/work.lock'))['pid']), 9); print('killed', ph)\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and deploy.is_alive():
        out = g.ssh(["python3", "-c", script], user="root", check=False).stdout.strip()
        if out.startswith("killed"):
            return out.split()[1]
        time.sleep(1)
    raise AssertionError("the deploy ended before its activate could be killed")


@pytest.mark.timeout(1800, func_only=True)
def test_failing_smoke_rolls_back_to_the_committed_release(
        systemd_guest: QemuGuest, root_device: HilDevice, bundle_for: BundleFactory,
        signing_pair: tuple[Path, Path]) -> None:
    g = systemd_guest
    dev = device(g, root_device)
    old = hil.status(dev).get("current")
    assert old, "needs a committed release from the tests above"
    bad = hil.deploy(dev, bundle_for("3.0.0", expect=("zebra-quantum-never",)), signing_pair[1])
    assert bad.rc == 4 and f"rolled back to {old}" in bad.text, bad.text
    st = serves_committed(g, dev, str(old))
    assert "3.0.0" in (st.get("failed") or {})
    journal = g.ssh(["journalctl", "-u", "llmos-edge", "--no-pager", "-o", "cat"], user="root").stdout
    assert journal.strip()  # the service logged to the journal, where `llmos-edge logs` reads it
