"""Refused before transfer, with nothing changed on the device, and a message that says what to do."""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.errors import CheckFailed, DeviceError, LlmosError, UserError
from llmos_edge.transports.ssh import fingerprint

from .conftest import BundleFactory
from .devices import Device
from .helpers import run_deploy


@pytest.fixture
def installed(device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]) -> Iterator[Device]:
    """A device already running 1.0.0, so refusals must also leave a live install alone."""
    run_deploy(device, bundle_for(device, "1.0.0"), signing_key[1])
    assert device.serving() == "1.0.0"
    yield device


def refused(
    dev: Device, exc_type: type[LlmosError], bundle: Path, pubkey: Path | None, **kw: object
) -> LlmosError:
    before = dev.snapshot()
    with pytest.raises(exc_type) as info:
        run_deploy(dev, bundle, pubkey, **kw)  # type: ignore[arg-type]
    assert dev.snapshot() == before, "a refused deploy changed the device"
    assert dev.serving() == "1.0.0"
    return info.value


def test_wrong_arch(installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]) -> None:
    exc = refused(installed, UserError, bundle_for(installed, "2.0.0", arch="aarch64"), signing_key[1])
    assert "aarch64" in exc.message and exc.hints


def test_wrong_target(installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]) -> None:
    # the device runs a "host" bundle: a bundle for rpi4 is refused even without --target
    exc = refused(installed, UserError, bundle_for(installed, "2.0.0", target="rpi4"), signing_key[1])
    assert "rpi4" in exc.message and "host" in exc.message
    exc = refused(
        installed, UserError, bundle_for(installed, "2.0.1"), signing_key[1], expected_target="rpi5"
    )
    assert "rpi5" in exc.message


def test_unsigned_refused_unless_allowed(
    installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    b = bundle_for(installed, "2.0.0", key=None)
    exc = refused(installed, CheckFailed, b, signing_key[1])
    assert "not signed" in exc.message and any("--allow-unsigned" in h for h in exc.hints)
    rep = run_deploy(installed, b, signing_key[1], allow_unsigned=True)
    assert rep.status == "ok" and any("unsigned" in n for n in rep.notes)
    audit = installed.state("audit.jsonl").read_text()
    assert '"unsigned": true' in audit


def test_tampered_refused(
    installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    b = bundle_for(installed, "2.0.0")
    (b / "config" / "runtime.json").write_text('{"port": 1}')  # payload changed after signing
    refused(installed, CheckFailed, b, signing_key[1])
    b2 = bundle_for(installed, "2.0.1")
    m = (b2 / "manifest.json").read_text().replace('"2.0.1"', '"9.9.9"')  # manifest changed after signing
    (b2 / "manifest.json").write_text(m)
    exc = refused(installed, CheckFailed, b2, signing_key[1])
    assert "signature" in exc.message


def test_wrong_key_refused(installed: Device, bundle_for: BundleFactory, tmp_path: Path) -> None:
    from llmos_edge.bundle.keys import generate_keys

    other = generate_keys(tmp_path / "other")
    refused(installed, CheckFailed, bundle_for(installed, "2.0.0", key=other[0]), None)


def test_downgrade(installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]) -> None:
    old = bundle_for(installed, "0.9.0")
    exc = refused(installed, UserError, old, signing_key[1])
    assert "downgrade" in exc.message and any("--allow-downgrade" in h for h in exc.hints)
    rep = run_deploy(installed, old, signing_key[1], allow_downgrade=True)
    assert rep.status == "ok" and installed.serving() == "0.9.0"
    assert "allow-downgrade" in installed.state("audit.jsonl").read_text()


def test_same_version_is_nothing_to_do(
    installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    before = installed.snapshot()
    rep = run_deploy(installed, bundle_for(installed, "1.0.0", tag="again"), signing_key[1])
    assert rep.status == "up-to-date" and "already active" in rep.message and rep.bytes_sent == 0
    assert installed.snapshot() == before and installed.serving() == "1.0.0"


def test_disk_too_small(device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]) -> None:
    """The device root sits on a real 3 MB tmpfs; a 6 MB bundle is refused before transfer."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(device.home)], check=True)
    try:
        os.chown(device.home, *_ids())
        run_deploy(device, bundle_for(device, "1.0.0", model_size=100_000), signing_key[1], disk_margin_mb=1)
        big = bundle_for(device, "2.0.0", model_size=6_000_000)
        exc = refused(device, DeviceError, big, signing_key[1], disk_margin_mb=1)
        assert "not enough disk" in exc.message and exc.hints
    finally:
        device.stop_runtime()
        subprocess.run(["umount", "-l", str(device.home)], check=False)


def _ids() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam("llmos-dev")
    return pw.pw_uid, pw.pw_gid


def test_archive_path_escape(
    installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], tmp_path: Path
) -> None:
    b = bundle_for(installed, "2.0.0")
    image = tmp_path / "evil.tar.gz"
    with tarfile.open(image, "w:gz") as tar:
        for p in sorted(b.rglob("*")):
            tar.add(p, arcname=p.relative_to(b).as_posix(), recursive=False)
        evil = tmp_path / "evil.txt"
        evil.write_text("pwned")
        tar.add(evil, arcname="../../escaped.txt")
    exc = refused(installed, LlmosError, image, signing_key[1])
    assert "escaped.txt" in exc.message
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_manifest_path_escape_refused_by_agent(installed: Device) -> None:
    """Even a manifest that got past the host is refused by the device agent (defence in depth)."""
    import json

    from llmos_edge.device import agent, base, store

    lay = base.Layout(installed.root)
    args = agent.parser().parse_args(["install", "--version", "6.6.6", "--token", "x"])
    with pytest.raises(base.AgentError):  # no lock held: refused before reading anything
        store.cmd_install(lay, args)
    assert not base.safe_relpath("../x") and not base.safe_relpath("/etc/passwd")
    assert not base.safe_relpath("a/../../b") and base.safe_relpath("models/m/x.onnx")
    assert json  # keep import used


def test_unknown_host_key_refused_then_accepted(
    installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    installed.known_hosts.write_text("")
    exc = refused(installed, DeviceError, bundle_for(installed, "2.0.0"), signing_key[1])
    assert "unknown" in exc.message
    fp = exc.message.rsplit(" ", 1)[-1]
    assert fp.startswith("SHA256:") and any(fp in h for h in exc.hints)
    rep = run_deploy(installed, bundle_for(installed, "2.0.1"), signing_key[1], ssh={"accept_host_key": fp})
    assert rep.status == "ok"
    assert installed.known_hosts.read_text() == installed.host_key_line()


def test_changed_host_key_refused(
    installed: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519")
    kind, blob = other.export_public_key().decode().split()[:2]
    installed.known_hosts.write_text(f"[{installed.host}]:{installed.port} {kind} {blob}\n")
    exc = refused(installed, DeviceError, bundle_for(installed, "2.0.0"), signing_key[1])
    assert "CHANGED" in exc.message
    # accepting a fingerprint that is not the device's does not help
    refused(
        installed,
        DeviceError,
        bundle_for(installed, "2.0.1"),
        signing_key[1],
        ssh={"accept_host_key": fingerprint(other)},
    )
