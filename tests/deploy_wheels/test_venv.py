"""The agent's venv from a bundle's offline wheels: built once per wheel set, atomic, failure-safe.

Fast: the bundles are tests/deploy's small ones, whose stdlib "runtime" imports a tiny real wheel
(built here) so the answer shows which venv it runs in. pip, venv and the device are real.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from llmos_edge.deploy import commands
from llmos_edge.deploy.remote import AgentFailed
from llmos_edge.errors import UserError
from tests.deploy.bundles import RUNTIME_MAIN, make_bundle
from tests.deploy.devices import Device
from tests.deploy.helpers import run_deploy

from .conftest import make_wheel

RUNTIME_WITH_DEP = RUNTIME_MAIN.replace(
    'body = json.dumps({"tag": cfg["tag"]}).encode()',
    'import llmos_probe_dep\n'
    '        body = json.dumps({"tag": cfg["tag"], "dep": llmos_probe_dep.VERSION,'
    ' "prefix": sys.prefix}).encode()',
)


def answer(dev: Device) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{dev.runtime_port}/", timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def wheel_bundle(tmp: Path, dev: Device, key: Path, version: str, wheels: list[Path], **kw: Any) -> Path:
    extra = {f"wheels/{w.name}": w.read_bytes() for w in wheels}
    extra["runtime/llmos_runtime/__main__.py"] = RUNTIME_WITH_DEP.encode()
    return make_bundle(tmp / "bundles", version, port=dev.runtime_port, key=key, extra_files=extra, **kw)


def venvs(dev: Device) -> list[str]:
    folder = Path(dev.root) / "venvs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def audit_events(dev: Device, event: str) -> list[dict[str, Any]]:
    lines = dev.state("audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def test_venv_built_once_per_wheel_set(
    device: Device, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    dep1 = make_wheel(tmp_path / "w1", "llmos_probe_dep", "1.0")
    b1 = wheel_bundle(tmp_path, device, signing_key[0], "1.0.0", [dep1])
    assert run_deploy(device, b1, signing_key[1]).status == "ok"
    first = answer(device)
    assert first["dep"] == "1.0" and first["tag"] == "1.0.0"
    (key,) = venvs(device)
    assert first["prefix"] == str(Path(device.root) / "venvs" / key)
    marker = Path(device.root) / "venvs" / key / ".llmos-venv.json"
    stamp = marker.stat().st_mtime_ns

    # same wheels, new config: the running venv is reused, not rebuilt
    b2 = wheel_bundle(tmp_path, device, signing_key[0], "1.0.1", [dep1], tag="second")
    assert run_deploy(device, b2, signing_key[1]).status == "ok"
    assert answer(device) == dict(first, tag="second")
    assert venvs(device) == [key] and marker.stat().st_mtime_ns == stamp
    assert len(audit_events(device, "venv_built")) == 1

    # other wheels: a second venv, built beside the first; a build cut off earlier is cleared away
    stale = Path(device.root) / "venvs" / f".{key}.cut-off.partial"
    stale.mkdir()
    dep2 = make_wheel(tmp_path / "w2", "llmos_probe_dep", "2.0")
    b3 = wheel_bundle(tmp_path, device, signing_key[0], "1.0.2", [dep2])
    assert run_deploy(device, b3, signing_key[1]).status == "ok"
    assert answer(device)["dep"] == "2.0"
    assert len(venvs(device)) == 2 and not stale.exists()
    (key2,) = set(venvs(device)) - {key}

    # pruning releases drops the venvs no kept release uses
    b4 = wheel_bundle(tmp_path, device, signing_key[0], "1.0.3", [dep2], tag="fourth")
    assert run_deploy(device, b4, signing_key[1]).status == "ok"
    pruned = asyncio.run(commands.releases(device.address, device.options(), device.root, keep=0))
    assert sorted(pruned["removed"]) == ["1.0.0", "1.0.1"]
    assert venvs(device) == [key2] and answer(device)["tag"] == "fourth"


def test_wheels_that_fail_to_install_leave_old_release_serving(
    device: Device, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    good = make_wheel(tmp_path / "w1", "llmos_probe_dep", "1.0")
    assert run_deploy(device, wheel_bundle(tmp_path, device, signing_key[0], "1.0.0", [good]), signing_key[1])
    pid_before = json.loads(device.state("service.pid").read_text())["pid"]
    broken = tmp_path / "w2" / "llmos_probe_dep-2.0-py3-none-any.whl"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not a zip archive")
    bad = wheel_bundle(tmp_path, device, signing_key[0], "1.1.0", [broken])
    with pytest.raises(AgentFailed) as info:
        run_deploy(device, bad, signing_key[1])
    exc = info.value
    assert exc.exit_code == 3
    assert "install the bundle's offline wheels" in exc.message
    assert any("previous release keeps serving" in h for h in exc.hints)
    assert exc.payload.get("active") == "1.0.0"
    # the old release never stopped: same process, same answer, still current
    assert json.loads(device.state("service.pid").read_text())["pid"] == pid_before
    assert answer(device)["tag"] == "1.0.0" and device.current() == "1.0.0"
    assert "1.1.0" in json.loads(device.state("failed.json").read_text())
    assert len(venvs(device)) == 1  # no partial venv left behind
    assert audit_events(device, "venv_failed")[0]["version"] == "1.1.0"


@pytest.mark.parametrize(
    ("wheel", "why"),
    [
        ("numpy-2.4.6-cp312-cp312-manylinux_2_17_x86_64.whl", "needs Python 3.12, the device has 3.11"),
        ("probe-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", "is built for aarch64, the device is x86_64"),
        ("probe-1.0-cp311-cp311-manylinux_2_99_x86_64.whl", "needs glibc 2.99"),
    ],
)
def test_wheels_for_another_python_refused_before_transfer(
    device: Device, tmp_path: Path, signing_key: tuple[Path, Path], wheel: str, why: str
) -> None:
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the wheel tags in this test are written for an x86_64 device")
    fake = tmp_path / "w" / wheel
    fake.parent.mkdir()
    fake.write_bytes(b"never sent: refused on its tags")
    bundle = wheel_bundle(tmp_path, device, signing_key[0], "1.0.0", [fake])
    before = device.snapshot()
    with pytest.raises(UserError) as info:
        run_deploy(device, bundle, signing_key[1])
    assert why in info.value.message and wheel in info.value.message
    assert any("--no-wheels" in h for h in info.value.hints)
    assert device.snapshot() == before, "a refused deploy changed the device"
