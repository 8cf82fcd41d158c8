"""Defaults that match the device: `llmos-edge deploy` as typed, without --root, over a real sshd.

The install root comes from the bundle's own signed unit (ExecStart=<root>/current/...), so the
folder the agent fills is the one the unit starts; a login that cannot write it is refused before
anything is sent. These bundles name a root inside the per-test device folder (not ~/llmos, which
all concurrent sessions would share).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import BundleFactory
from .devices import Device


def unit(root: str) -> dict[str, bytes]:
    text = f"[Service]\nUser=llmos\nExecStart={root}/current/bin/llmos-launch\n"
    return {"systemd/llmos-edge.service": text.encode()}


def cli(dev: Device, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a technician types it: device and SSH settings, no --root."""
    cmd = [sys.executable, "-m", "llmos_edge", *args, "--device", dev.address,
           "--known-hosts", str(dev.known_hosts), "--identity", str(dev.identity)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_default_flags_install_where_the_bundle_unit_looks(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    # target rpi5 (install.service = systemd): a non-root login never installs the unit, and says so
    b = bundle_for(device, "1.0.0", target="rpi5", extra_files=unit(device.root))
    ok = cli(device, "deploy", str(b), "--key", str(signing_key[1]))
    assert ok.returncode == 0, ok.stderr
    assert device.current() == "1.0.0" and device.serving() == "1.0.0"
    assert "pidfile supervision" in ok.stdout
    launcher = Path(device.root) / "current" / "bin"
    assert (Path(device.root) / "current").is_symlink() and launcher.parent.is_dir()
    st = cli(device, "status", "--json", "--root", device.root)
    assert st.returncode == 0 and json.loads(st.stdout)["current"] == "1.0.0", st.stderr


def test_root_flag_overrides_in_pidfile_mode(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    alt = str(device.home / "alt")
    b = bundle_for(device, "1.0.0", extra_files=unit(device.root))
    try:
        ok = cli(device, "deploy", str(b), "--key", str(signing_key[1]), "--root", alt)
        assert ok.returncode == 0, ok.stderr
        assert os.readlink(Path(alt) / "current").endswith("1.0.0") and not Path(device.root).exists()
        assert device.serving() == "1.0.0"
    finally:  # the device fixture stops the runtime of device.root only; this one would outlive the test
        from llmos_edge.device import base, service

        service.service_stop(base.Layout(alt))


def test_unwritable_target_root_is_refused_at_preflight(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    locked = device.home / "locked"
    locked.mkdir(mode=0o755)  # owned by root: the device login cannot create the install root in it
    root = f"{locked}/llmos"
    before = device.snapshot()
    res = cli(device, "deploy", str(bundle_for(device, "1.0.0", extra_files=unit(root))),
              "--key", str(signing_key[1]))
    assert res.returncode == 2, res.stderr
    assert f"cannot write the install root {root}" in res.stderr and "log in as root" in res.stderr
    assert "--root ~/llmos --service pidfile" in res.stderr
    assert device.snapshot() == before and not Path(root).exists()


def test_service_systemd_on_a_non_root_login_is_refused(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    before = device.snapshot()
    res = cli(device, "deploy", str(bundle_for(device, "1.0.0", extra_files=unit(device.root))),
              "--key", str(signing_key[1]), "--service", "systemd")
    assert res.returncode == 2 and "--service systemd, but" in res.stderr, res.stderr
    assert device.snapshot() == before


def test_bundle_signed_by_another_key_is_refused(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], tmp_path: Path
) -> None:
    """Signed with key A, deployed with --key B.pub: exit 4, the device keeps serving what it had."""
    from llmos_edge.bundle.keys import generate_keys

    first = cli(device, "deploy", str(bundle_for(device, "1.0.0", extra_files=unit(device.root))),
                "--key", str(signing_key[1]))
    assert first.returncode == 0, first.stderr
    key_a, _pub_a = generate_keys(tmp_path / "key-a")
    signed_by_a = bundle_for(device, "2.0.0", key=key_a, extra_files=unit(device.root))
    before = device.snapshot()
    res = cli(device, "deploy", str(signed_by_a), "--key", str(signing_key[1]))
    assert res.returncode == 4, res.stderr
    assert "signature does not verify with key" in res.stderr and "no public key" not in res.stderr
    assert "--key is the .pub of the key the bundle was built with" in res.stderr
    assert device.snapshot() == before and device.serving() == "1.0.0"


def test_install_root_under_a_file_is_refused(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """A path component that is a file (here one the login owns) can never hold the install."""
    blocker = device.home / "blocker"
    blocker.write_text("not a folder")
    os.chown(blocker, os.stat(device.home).st_uid, os.stat(device.home).st_gid)
    before = device.snapshot()
    res = cli(device, "deploy", str(bundle_for(device, "1.0.0", extra_files=unit(f"{blocker}/llmos"))),
              "--key", str(signing_key[1]))
    assert res.returncode == 2 and f"cannot write the install root {blocker}/llmos" in res.stderr, res.stderr
    assert device.snapshot() == before and blocker.read_text() == "not a folder"
