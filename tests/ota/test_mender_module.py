"""The real Mender client (Debian mender-client, standalone) installs bundles through our update module.

`mender install` runs /usr/share/mender/modules/v3/llmos-bundle and reads /etc/mender: the test bind-mounts
its own folders there inside a private mount namespace (`unshare --mount`), so the host is not touched.
The module drives the real device agent on a local root; the bundle's real runtime serves a tiny model
and its real smoke test decides. Needs root (mount namespace) and the mender-client package.
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
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos_edge.device import pack
from llmos_edge.ota import export_mender

MODULES_DIR = "/usr/share/mender/modules/v3"
DEVICE_TYPE = "raspberrypi5"

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts in a private mount namespace need root"),
    pytest.mark.skipif(
        not shutil.which("mender"), reason="needs the mender client: apt-get install mender-client"
    ),
    pytest.mark.skipif(not shutil.which("mender-artifact"), reason="needs mender-artifact (apt)"),
    pytest.mark.skipif(not os.path.isdir(MODULES_DIR), reason=f"mender-client has no {MODULES_DIR}"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MenderDevice:
    """A device as Mender sees it: /etc/mender, the modules folder, the data dir, our module settings."""

    def __init__(self, base: Path, verify_key: Path, port: int) -> None:
        self.etc, self.mods, self.data = base / "etc-mender", base / "modules", base / "data"
        for d in (self.etc, self.mods, self.data):
            d.mkdir(parents=True)
        (self.etc / "artifact_info").write_text("artifact_name=factory\n")
        (self.etc / "mender.conf").write_text(json.dumps({"ArtifactVerifyKey": str(verify_key)}))
        (self.data / "device_type").write_text(f"device_type={DEVICE_TYPE}\n")
        (self.mods / "llmos-bundle").write_bytes(pack.updater_script())  # what bundles ship
        (self.mods / "llmos-bundle").chmod(0o755)
        self.root = base / "llmos"
        self.port = port
        self.settings = base / "llmos-mender.json"
        self.settings.write_text(
            json.dumps({"root": str(self.root), "smoke_timeout": 120, "python": sys.executable})
        )

    def mender(self, *args: str) -> subprocess.CompletedProcess[str]:
        script = 'mount --bind "$1" /etc/mender && mount --bind "$2" "$3" && shift 3 && exec "$@"'
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(self.etc),
            str(self.mods),
            MODULES_DIR,
            "mender",
            "-c",
            "/etc/mender/mender.conf",
            "-d",
            str(self.data),
            "--no-syslog",
            *args,
        ]
        env = {**os.environ, "LLMOS_MENDER_CONFIG": str(self.settings)}
        return subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)

    def status(self) -> dict[str, object]:
        agent = self.root / "bin" / "llmos-agent"
        proc = subprocess.run(
            [sys.executable, str(agent), "status", "--root", str(self.root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        res: dict[str, object] = json.loads(proc.stdout)
        return res

    def artifact_name(self) -> str:
        return self.mender("show-artifact").stdout.strip()

    def stop(self) -> None:
        """End the runtime the agent started (no systemd here: a pidfile-managed process)."""
        pid = self.root / "state" / "service.pid"
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(int(json.loads(pid.read_text())["pid"]), signal.SIGTERM)


@pytest.fixture
def ec_keys(x509_pair: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(private SEC1 key that signs artifacts, public key the device verifies with)."""
    from cryptography.hazmat.primitives import serialization

    _cert, key = x509_pair
    pub = tmp_path / "artifact-verify.pub.pem"
    priv = serialization.load_pem_private_key(key.read_bytes(), None)
    pub.write_bytes(
        priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


@pytest.fixture
def device(tmp_path: Path, ec_keys: tuple[Path, Path]) -> Iterator[MenderDevice]:
    dev = MenderDevice(tmp_path / "dev", ec_keys[1], _free_port())
    yield dev
    dev.stop()


def _image(
    tmp_path: Path, model: Path, version: str, dev: MenderDevice, expect: tuple[str, ...] = ()
) -> Path:
    from llmos_edge.bundle import generate_keys, make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.spec import Golden, load_target

    sign, _ = generate_keys(tmp_path / f"bundle-sign-{version}")
    spec = BundleSpec(
        target=load_target("host"),
        recipe="tiny",
        version=version,
        models={"tiny": model},
        golden=(Golden(prompt="Say hi", max_tokens=4, expect_contains=expect),),
        signing_key=sign,
        wheels=False,
        config_overrides={"port": dev.port},
    )
    return make_bundle(spec, tmp_path / f"bundle-{version}").image


def _artifact(
    tmp_path: Path,
    model: Path,
    version: str,
    dev: MenderDevice,
    key: Path | None,
    expect: tuple[str, ...] = (),
) -> Path:
    image = _image(tmp_path, model, version, dev, expect)
    return export_mender(image, tmp_path / f"tiny-{version}.mender", [DEVICE_TYPE], signing_key=key)


def _serves(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
        return "tiny" in [m["id"] for m in json.loads(r.read())["data"]]


@pytest.mark.timeout(1800)
def test_mender_installs_commits_and_rolls_back_through_the_agent(
    device: MenderDevice, tiny_decoder_fp32_dir: Path, tmp_path: Path, ec_keys: tuple[Path, Path]
) -> None:
    key = ec_keys[0]
    a1 = _artifact(tmp_path, tiny_decoder_fp32_dir, "1.0.0", device, key)
    r = device.mender("install", str(a1))
    assert r.returncode == 0, r.stdout + r.stderr
    assert device.status()["current"] == "1.0.0" and _serves(device.port)
    assert device.mender("commit").returncode == 0
    assert device.artifact_name().endswith("1.0.0")

    bad = _artifact(tmp_path, tiny_decoder_fp32_dir, "1.1.0", device, key, expect=("zebra-never",))
    r = device.mender("install", str(bad))
    assert r.returncode != 0  # the smoke test failed on the device
    assert "failed its smoke test" in r.stdout + r.stderr
    st = device.status()
    assert st["current"] == "1.0.0" and "1.1.0" in (st.get("failed") or {})  # type: ignore[operator]
    assert _serves(device.port) and device.artifact_name().endswith("1.0.0")

    a2 = _artifact(tmp_path, tiny_decoder_fp32_dir, "2.0.0", device, key)
    assert device.mender("install", str(a2)).returncode == 0
    assert device.status()["current"] == "2.0.0"
    r = device.mender("rollback")  # an operator (or the server) decides against 2.0.0 before commit
    assert r.returncode == 0, r.stdout + r.stderr
    assert device.status()["current"] == "1.0.0" and _serves(device.port)
    assert device.artifact_name().endswith("1.0.0")
    audit = (device.root / "state" / "audit.jsonl").read_text()
    assert '"via": "mender"' in audit


def test_unsigned_or_tampered_artifacts_change_nothing(
    device: MenderDevice, tiny_decoder_fp32_dir: Path, tmp_path: Path, ec_keys: tuple[Path, Path]
) -> None:
    unsigned = _artifact(tmp_path, tiny_decoder_fp32_dir, "1.0.0", device, None)
    r = device.mender("install", str(unsigned))
    assert r.returncode != 0 and "signature" in (r.stdout + r.stderr).lower()
    assert not (device.root / "releases").exists()

    # signed, but its meta-data names another manifest: the module refuses before the agent runs
    image = _image(tmp_path / "forged", tiny_decoder_fp32_dir, "1.0.1", device)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"manifest_sha256": "0" * 64}))
    forged = tmp_path / "forged.mender"
    subprocess.run(
        [
            "mender-artifact",
            "write",
            "module-image",
            "-T",
            "llmos-bundle",
            "-n",
            "forged-1",
            "-t",
            DEVICE_TYPE,
            "-o",
            str(forged),
            "-f",
            str(image),
            "-m",
            str(meta),
            "-k",
            str(ec_keys[0]),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    r = device.mender("install", str(forged))
    assert r.returncode != 0 and "is not the artifact's" in r.stdout + r.stderr
    assert not (device.root / "releases").exists()
