"""Fixtures for the deploy agent's offline-wheels venv and ESP32 bridge paths.

The devices are tests/deploy's real ones (a private sshd per test, login user llmos-dev, whose
python3 is Debian's /usr/bin/python3 3.11 with venv): imported, not copied.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: reach tests/deploy's helpers
from tests.deploy.devices import Device, start_device

if not (Path("/usr/sbin/sshd").exists() and os.geteuid() == 0):
    pytest.skip(
        "deploy tests need openssh-server (apt install openssh-server) and root to create the device user",
        allow_module_level=True,
    )

from tests.deploy.conftest import client_key, device_python, signing_key

__all__ = ["client_key", "device_python", "signing_key"]


def stop_agent_processes(dev: Device) -> None:
    """Every pidfile-managed process the agent started on the device (runtime and bridge)."""
    for name in ("service.pid", "bridge.pid"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.killpg(int(json.loads(dev.state(name).read_text())["pid"]), signal.SIGKILL)


@pytest.fixture
def device(tmp_path: Path, client_key: tuple[Path, Path]) -> Iterator[Device]:
    d = tmp_path / "device"
    d.mkdir()
    dev = start_device(d, client_key[0], client_key[1])
    yield dev
    stop_agent_processes(dev)
    dev.stop()


def make_wheel(out: Path, dist: str, version: str, *, tag: str = "py3-none-any", code: str = "") -> Path:
    """A real (tiny, pure-Python) wheel that pip installs: module `dist` with VERSION = version."""
    out.mkdir(parents=True, exist_ok=True)
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n{code}".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: llmos-tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = out / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return path
