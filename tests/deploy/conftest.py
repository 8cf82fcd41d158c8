"""Fixtures for deploy tests: real sshd devices, signing keys, bundle factories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .bundles import make_bundle
from .devices import DEV_USER, Device, make_client_key, start_device

if not (Path("/usr/sbin/sshd").exists() and os.geteuid() == 0):
    pytest.skip(
        "deploy tests need openssh-server (apt install openssh-server) and root to create the device user",
        allow_module_level=True,
    )


@pytest.fixture(scope="session")
def client_key() -> Iterator[tuple[Path, Path]]:
    """(private key, world-readable authorized_keys) shared by all devices of the session."""
    folder = Path(tempfile.mkdtemp(prefix="llmos-dev-keys-", dir="/tmp"))
    os.chmod(folder, 0o755)
    key, pub = make_client_key(folder)
    auth = folder / "authorized_keys"
    auth.write_text(pub)
    os.chmod(auth, 0o644)
    yield key, auth
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from llmos_edge.bundle.keys import generate_keys

    return generate_keys(tmp_path_factory.mktemp("keys") / "sign")


@pytest.fixture
def device(tmp_path: Path, client_key: tuple[Path, Path]) -> Iterator[Device]:
    d = tmp_path / "device"
    d.mkdir()
    dev = start_device(d, client_key[0], client_key[1])
    yield dev
    dev.stop()


BundleFactory = Callable[..., Path]


@pytest.fixture
def bundle_for(tmp_path: Path, signing_key: tuple[Path, Path]) -> BundleFactory:
    """bundle_for(device, version, **kw) -> a signed bundle folder; its runtime uses the device's port."""
    out = tmp_path / "bundles"

    def make(dev: Device, version: str, **kw: object) -> Path:
        kw.setdefault("key", signing_key[0])
        return make_bundle(out, version, port=dev.runtime_port, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def device_python() -> Iterator[str]:
    """A python the device user can run that sees this project's site-packages (same 3.11 ABI).

    For bundles built --no-wheels (the bridge test): /root is 0700, so the project venv itself is out
    of the device user's reach; a world-readable venv of /usr/bin/python3 points at its packages.
    """
    site = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "onnxruntime").is_dir())
    folder = Path(tempfile.mkdtemp(prefix="llmos-dev-py-", dir="/tmp"))
    folder.chmod(0o755)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (folder / "venv" / "lib" / ver / "site-packages" / "project.pth").write_text(f"{site}\n")
    py = str(folder / "venv" / "bin" / "python3")
    probe = subprocess.run(
        ["su", DEV_USER, "-s", "/bin/sh", "-c", f"{py} -c 'import onnxruntime_genai, serial'"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"the device user cannot import the runtime's dependencies: {probe.stderr[-300:]}")
    yield py
    shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long soak is its own tier: it runs only when asked for with -m soak."""
    if "soak" in (config.option.markexpr or ""):
        return
    why = "the >=100-trial soak runs with: scripts/test -m soak tests/deploy/test_soak.py"
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
