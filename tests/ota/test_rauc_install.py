"""The real RAUC (Debian rauc 1.8: `rauc install` -> `rauc service` over D-Bus) installs our bundles.

A private dbus-daemon stands in for the system bus (DBUS_SYSTEM_BUS_ADDRESS, honoured by GDBus) and
`rauc service` runs with a system.conf in tmp_path: a rootfs slot `A` (booted, via --override-boot-slot,
as /proc/cmdline would say on a device) and one `llmos` slot whose image RAUC hands to the bundle's install
hook, which drives the real device agent; the bundle's real runtime serves a tiny model and its real
smoke test decides. Needs root (RAUC loop-mounts the bundle). Verity bundles also need dm-verity.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.ota import export_rauc

COMPATIBLE = "llmos-test-device"

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RAUC loop-mounts the bundle, which needs root"),
    pytest.mark.skipif(not shutil.which("rauc"), reason="needs rauc: apt-get install rauc"),
    pytest.mark.skipif(not shutil.which("mksquashfs"), reason="needs mksquashfs (apt: squashfs-tools)"),
    pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="needs dbus-daemon (apt: dbus-daemon)"),
    pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="no /dev/loop-control: RAUC mounts "
                       "bundles through a loop device"),
]

NO_DM = ("the kernel has no device-mapper (no `device-mapper` in /proc/misc, so /dev/mapper/control cannot "
         "open): RAUC 1.8 mounts verity bundles through dm-verity")


def _has_device_mapper() -> bool:
    """The kernel's word, not /dev/mapper/control: `dmsetup` creates that node even without the driver."""
    try:
        with open("/proc/misc", encoding="utf-8") as f:
            return any(line.split()[1:] == ["device-mapper"] for line in f)
    except OSError:
        return False

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


class RaucDevice:
    """A device as RAUC sees it: system.conf, keyring, slots, a system bus, and our updater settings."""

    def __init__(self, base: Path, keyring: Path, port: int) -> None:
        self.base, self.port, self.root = base, port, base / "llmos"
        base.mkdir(parents=True)
        (base / "rootfs.img").write_bytes(b"")  # never written: the bundle has no rootfs image
        (base / "llmos-slot").write_bytes(b"")  # never written: the install hook does the work
        self.mounts = base / "mnt"
        self.conf = base / "system.conf"
        self.conf.write_text(
            f"[system]\ncompatible={COMPATIBLE}\nbootloader=noop\nmountprefix={self.mounts}\n"
            f"data-directory={base / 'rauc-data'}\n\n[keyring]\npath={keyring}\n\n"
            f"[slot.rootfs.0]\ndevice={base / 'rootfs.img'}\ntype=raw\nbootname=A\n\n"
            f"[slot.llmos.0]\ndevice={base / 'llmos-slot'}\ntype=raw\n"
        )
        self.settings = base / "ota.json"
        self.settings.write_text(
            json.dumps({"root": str(self.root), "smoke_timeout": 120, "python": sys.executable})
        )
        self.bus_dir = tempfile.mkdtemp(prefix="llmos-bus-", dir="/tmp")  # unix socket paths are short
        self.service_log = base / "rauc-service.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}

    def start(self) -> None:
        conf = Path(self.bus_dir) / "bus.conf"
        conf.write_text(BUS_CONF.format(socket=Path(self.bus_dir) / "bus.sock"))
        bus = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.procs.append(bus)
        assert bus.stdout is not None
        address = bus.stdout.readline().decode().strip()
        assert address.startswith("unix:"), f"dbus-daemon gave no address (exit {bus.poll()})"
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address, "LLMOS_OTA_CONFIG": str(self.settings)}
        with open(self.service_log, "wb") as log:
            self.procs.append(subprocess.Popen(
                ["rauc", "service", f"--conf={self.conf}", "--override-boot-slot=A"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env))
        deadline = time.monotonic() + 30
        while self.rauc("status").returncode != 0:  # `rauc status` asks the service over D-Bus
            assert time.monotonic() < deadline, self.service_log.read_text()
            assert self.procs[-1].poll() is None, self.service_log.read_text()
            time.sleep(0.3)

    def rauc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rauc", *args], capture_output=True, text=True, timeout=900, env=self.env)

    def install(self, bundle: Path) -> tuple[int, str]:
        """`rauc install`; (exit code, client output + what the service and hook logged meanwhile)."""
        before = self.service_log.stat().st_size
        r = self.rauc("install", str(bundle))
        with open(self.service_log, "rb") as f:
            f.seek(before)
            logged = f.read().decode(errors="replace")
        return r.returncode, r.stdout + r.stderr + logged

    def status(self) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, str(self.root / "bin" / "llmos-agent"), "status", "--root", str(self.root)],
            capture_output=True, text=True, timeout=60)
        res: dict[str, object] = json.loads(proc.stdout)
        return res

    def close(self) -> None:
        """Runtime (agent pidfile), rauc service, dbus-daemon; then any bundle mount RAUC left behind."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = json.loads((self.root / "state" / "service.pid").read_text())["pid"]
            os.kill(int(pid), signal.SIGTERM)
        for proc in reversed(self.procs):
            _stop(proc)
        with open("/proc/mounts", encoding="utf-8") as f:
            ours = [line.split()[1] for line in f if line.split()[1].startswith(str(self.mounts) + "/")]
        for mount in reversed(ours):
            subprocess.run(["umount", "-l", mount], check=False, timeout=60)
        shutil.rmtree(self.bus_dir, ignore_errors=True)


@pytest.fixture(params=["verity", "plain"])
def bundle_format(request: pytest.FixtureRequest) -> str:
    fmt: str = request.param
    if fmt == "verity" and not _has_device_mapper():
        pytest.skip(NO_DM)
    return fmt


@pytest.fixture
def device(tmp_path: Path, x509_pair: tuple[Path, Path]) -> Iterator[RaucDevice]:
    dev = RaucDevice(tmp_path / "dev", x509_pair[0], _free_port())
    try:
        dev.start()
        yield dev
    finally:
        dev.close()


def _bundle(tmp_path: Path, model: Path, version: str, dev: RaucDevice, signer: tuple[Path, Path], fmt: str,
            expect: tuple[str, ...] = ()) -> Path:
    from llmos_edge.bundle import generate_keys, make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.spec import Golden, load_target

    sign, _ = generate_keys(tmp_path / f"bundle-sign-{version}")
    spec = BundleSpec(target=load_target("host"), recipe="tiny", version=version, models={"tiny": model},
                      golden=(Golden(prompt="Say hi", max_tokens=4, expect_contains=expect),),
                      signing_key=sign, wheels=False, config_overrides={"port": dev.port})
    image = make_bundle(spec, tmp_path / f"bundle-{version}").image
    return export_rauc(image, tmp_path / f"tiny-{version}.raucb", COMPATIBLE, *signer, bundle_format=fmt)


def _serves(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
        return "tiny" in [m["id"] for m in json.loads(r.read())["data"]]


@pytest.mark.timeout(1800)
def test_rauc_installs_through_the_agent_and_refuses_bad_bundles(
    device: RaucDevice, bundle_format: str, tiny_decoder_fp32_dir: Path, tmp_path: Path,
    x509_pair: tuple[Path, Path], other_x509_pair: tuple[Path, Path],
) -> None:
    good = _bundle(tmp_path, tiny_decoder_fp32_dir, "1.0.0", device, x509_pair, bundle_format)
    rc, out = device.install(good)
    assert rc == 0, out
    assert "slot-install" in out  # RAUC ran our hook for the llmos slot
    assert device.status()["current"] == "1.0.0" and _serves(device.port)
    assert '"via": "rauc"' in (device.root / "state" / "audit.jsonl").read_text()

    # signed by a certificate outside the device's keyring: RAUC refuses before any hook runs
    foreign = _bundle(tmp_path, tiny_decoder_fp32_dir, "1.0.1", device, other_x509_pair, bundle_format)
    rc, out = device.install(foreign)
    assert rc != 0 and "signature" in out.lower(), out
    assert "slot-install" not in out
    assert device.status()["current"] == "1.0.0" and not (device.root / "releases" / "1.0.1").exists()

    # signed, but its golden answer fails the on-device smoke: the hook fails `rauc install`
    bad = _bundle(tmp_path, tiny_decoder_fp32_dir, "1.1.0", device, x509_pair, bundle_format,
                  expect=("zebra-never",))
    rc, out = device.install(bad)
    assert rc != 0, out
    assert "failed its smoke test" in out and "now serving 1.0.0" in out, out
    st = device.status()
    assert st["current"] == "1.0.0" and "1.1.0" in (st.get("failed") or {})  # type: ignore[operator]
    assert _serves(device.port)
