"""Mender and RAUC exports, validated by the tools' own `mender-artifact read` and `rauc info`."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from llmos_edge.device import pack
from llmos_edge.errors import UserError
from llmos_edge.ota import MENDER_TYPE, export_mender, export_rauc

needs_mender = pytest.mark.skipif(shutil.which("mender-artifact") is None,
                                  reason="mender-artifact not installed (apt-get install mender-artifact)")
needs_rauc = pytest.mark.skipif(shutil.which("rauc") is None or shutil.which("mksquashfs") is None,
                                reason="rauc/mksquashfs not installed (apt-get install rauc squashfs-tools)")


def _image_of(bundle: Path) -> Path:
    return next(bundle.parent.glob("*.tar.gz"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)


@needs_mender
def test_mender_artifact_reads_back_with_payload_and_device_types(small_bundle: Path, tmp_path: Path) -> None:
    out = export_mender(small_bundle, tmp_path / "probe.mender", ["raspberrypi5", "raspberrypi4"])
    info = _run("mender-artifact", "read", out)
    assert info.returncode == 0, info.stderr
    text = info.stdout
    assert "ota-probe-rpi5-1.2.3" in text
    assert "raspberrypi5" in text and "raspberrypi4" in text
    assert MENDER_TYPE in text
    assert _sha(_image_of(small_bundle)) in text  # the payload is the bundle image, byte for byte


@needs_mender
def test_mender_signed_artifact_verifies_and_wrong_key_fails(
        small_bundle: Path, tmp_path: Path, x509_pair: tuple[Path, Path]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    _cert, key = x509_pair
    pub = tmp_path / "ota.pub.pem"
    priv = serialization.load_pem_private_key(key.read_bytes(), None)
    pub.write_bytes(priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    out = export_mender(small_bundle, tmp_path / "signed.mender", ["raspberrypi5"], signing_key=key)
    ok = _run("mender-artifact", "read", "-k", pub, out)
    assert ok.returncode == 0 and "signed and verified correctly" in ok.stdout, ok.stdout + ok.stderr
    other = tmp_path / "other.pub.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    bad = _run("mender-artifact", "read", "-k", other, out)
    assert "signed and verified correctly" not in bad.stdout


@needs_rauc
def test_rauc_bundle_passes_rauc_info(
        small_bundle: Path, tmp_path: Path, x509_pair: tuple[Path, Path]) -> None:
    cert, key = x509_pair
    out = export_rauc(small_bundle, tmp_path / "probe.raucb", "llmos-rpi5", cert, key)
    info = _run("rauc", "info", f"--keyring={cert}", out)
    assert info.returncode == 0, info.stderr
    assert "llmos-rpi5" in info.stdout and "1.2.3" in info.stdout
    assert _image_of(small_bundle).name in info.stdout
    assert _sha(_image_of(small_bundle)) in info.stdout


@needs_rauc
@pytest.mark.parametrize("fmt", ["verity", "plain"])
def test_rauc_bundle_carries_the_install_hook(
        small_bundle: Path, tmp_path: Path, x509_pair: tuple[Path, Path], fmt: str) -> None:
    """`rauc extract` (signature + payload checked) yields our hook, the manifest hash, the image."""
    import json

    from llmos_edge.ota.rauc import RAUC_HOOK, RAUC_META

    cert, key = x509_pair
    out = export_rauc(small_bundle, tmp_path / "probe.raucb", "llmos-rpi5", cert, key, bundle_format=fmt)
    info = _run("rauc", "info", f"--keyring={cert}", "--output-format=json", out)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["images"] == [{"llmos": {
        "variant": None, "filename": _image_of(small_bundle).name, "checksum": _sha(_image_of(small_bundle)),
        "size": _image_of(small_bundle).stat().st_size, "hooks": ["install"], "adaptive": []}}]
    ex = _run("rauc", "extract", f"--keyring={cert}", out, tmp_path / "ex")
    assert ex.returncode == 0, ex.stderr
    hook = tmp_path / "ex" / RAUC_HOOK
    assert hook.read_bytes() == pack.updater_script()  # the packed updater, byte for byte
    assert hook.stat().st_mode & 0o111
    manifest_sha = hashlib.sha256((small_bundle / "manifest.json").read_bytes()).hexdigest()
    assert json.loads((tmp_path / "ex" / RAUC_META).read_text()) == {"manifest_sha256": manifest_sha}
    assert f"filename={RAUC_HOOK}" in (tmp_path / "ex" / "manifest.raucm").read_text()


@needs_rauc
def test_rauc_refuses_tampered_signature_and_foreign_keyring(
        small_bundle: Path, tmp_path: Path, x509_pair: tuple[Path, Path],
        other_x509_pair: tuple[Path, Path]) -> None:
    """`rauc info` checks the CMS signature (payload blocks are checked by dm-verity at install)."""
    cert, key = x509_pair
    out = export_rauc(small_bundle, tmp_path / "probe.raucb", "llmos-rpi5", cert, key)
    data = bytearray(out.read_bytes())
    data[-200] ^= 0x01  # inside the CMS signature + manifest blob at the end of the file
    (tmp_path / "tampered.raucb").write_bytes(bytes(data))
    assert _run("rauc", "info", f"--keyring={cert}", tmp_path / "tampered.raucb").returncode != 0
    assert _run("rauc", "info", f"--keyring={other_x509_pair[0]}", out).returncode != 0


def test_export_from_a_folder_without_image_packs_the_same_bytes(small_bundle: Path, tmp_path: Path) -> None:
    """A copied folder (no .tar.gz beside it) is re-packed reproducibly: same payload bytes."""
    if shutil.which("mender-artifact") is None:
        pytest.skip("mender-artifact not installed (apt-get install mender-artifact)")
    alone = tmp_path / "alone" / small_bundle.name
    shutil.copytree(small_bundle, alone)
    out = export_mender(alone, tmp_path / "alone.mender", ["raspberrypi5"])
    assert _sha(_image_of(small_bundle)) in _run("mender-artifact", "read", out).stdout


def test_missing_tools_are_clear_user_errors(
        small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        x509_pair: tuple[Path, Path]) -> None:
    """A PATH without the tools: the real lookup fails, and the error names the apt package."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UserError) as m:
        export_mender(small_bundle, tmp_path / "x.mender", ["raspberrypi5"])
    assert any("apt-get install -y mender-artifact" in h for h in m.value.hints)
    with pytest.raises(UserError) as r:
        export_rauc(small_bundle, tmp_path / "x.raucb", "llmos-rpi5", *x509_pair)
    assert "rauc" in r.value.message and any("apt-get install" in h for h in r.value.hints)
    assert not list(tmp_path.glob("x.*"))


@needs_mender
def test_bad_inputs_are_refused_before_the_tool_runs(
        small_bundle: Path, tmp_path: Path, x509_pair: tuple[Path, Path]) -> None:
    with pytest.raises(UserError, match="device types"):
        export_mender(small_bundle, tmp_path / "x.mender", [])
    with pytest.raises(UserError, match="device types"):
        export_mender(small_bundle, tmp_path / "x.mender", ["rpi5; rm -rf /"])
    with pytest.raises(UserError, match="does not exist"):
        export_mender(small_bundle, tmp_path / "x.mender", ["rpi5"], signing_key=tmp_path / "nokey.pem")
    if shutil.which("rauc"):
        with pytest.raises(UserError, match="certificate"):
            export_rauc(small_bundle, tmp_path / "x.raucb", "llmos-rpi5", tmp_path / "no.pem", x509_pair[1])
        with pytest.raises(UserError, match="bundle format"):
            export_rauc(small_bundle, tmp_path / "x.raucb", "llmos-rpi5", *x509_pair, bundle_format="crypt")
    assert not list(tmp_path.glob("x.*"))


def test_rauc_hook_outside_rauc_refuses_and_ignores_undeclared_hooks(tmp_path: Path) -> None:
    """The hook runs the real script: without RAUC's env it fails loudly; other slot hooks are no-ops."""
    import os
    import sys

    from llmos_edge.device import updater
    from llmos_edge.ota.rauc import RAUC_META

    assert updater.RAUC_META == RAUC_META  # one name, in device/protocol.py
    script = tmp_path / "llmos-hook"
    script.write_bytes(pack.updater_script())  # the packed file RAUC runs
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAUC_")}
    env["LLMOS_OTA_CONFIG"] = str(tmp_path / "none.json")
    run = [sys.executable, str(script)]
    r = subprocess.run([*run, "slot-install"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and "RAUC_IMAGE_NAME" in r.stderr
    env |= {"RAUC_IMAGE_NAME": str(tmp_path / "x.tar.gz"), "RAUC_BUNDLE_MOUNT_POINT": str(tmp_path)}
    r = subprocess.run([*run, "slot-install"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and RAUC_META in r.stderr  # a bundle without the signed manifest hash
    r = subprocess.run([*run, "slot-post-install"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0
