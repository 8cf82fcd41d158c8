"""A real `host` bundle WITH its offline wheels (onnxruntime, onnxruntime-genai, numpy, tokenizers...,
manylinux x86_64 cp311, pip-downloaded once into the llmos cache) deployed to a device whose only
Python is Debian's /usr/bin/python3: the agent builds the venv from the bundle's wheels alone, the
real runtime serves the tiny model from it and the bundle's real smoke test passes on the device.

slow: the first run downloads ~65 MB of wheels (cached afterwards) and pip-installs them on the device.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy.devices import DEV_USER, Device, free_port
from tests.deploy.helpers import assert_serves_tiny, run_deploy

pytestmark = pytest.mark.slow


def _bundle(out: Path, model: Path, version: str, key: Path, port: int, threads: int) -> Path:
    from llmos_edge.bundle.build import make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.spec import load_target
    from llmos_edge.spec.models import Golden

    spec = BundleSpec(
        target=load_target("host"),
        recipe="tiny",
        version=version,
        models={"tiny": model},
        golden=(Golden(prompt="Say hi", max_tokens=4),),
        signing_key=key,
        wheels=True,
        config_overrides={"port": port, "threads": threads},
    )
    return make_bundle(spec, out).folder


def _device_python_is_bare() -> None:
    """The premise: the device user's python3 lacks the runtime's packages (they must come from wheels)."""
    probe = subprocess.run(
        ["su", DEV_USER, "-s", "/bin/sh", "-c", "python3 -c 'import sys; import onnxruntime'"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        pytest.skip("the device user's python3 already has onnxruntime: it would not prove the wheels work")


def test_runtime_runs_from_bundle_wheels_on_device(
    device: Device, tiny_decoder_dir: Path, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    _device_python_is_bare()
    device.runtime_port = port = free_port()
    b1 = _bundle(tmp_path / "b1", tiny_decoder_dir, "1.0.0", signing_key[0], port, threads=1)
    manifest = json.loads((b1 / "manifest.json").read_text())
    assert manifest["wheels"]["python"] == "3.11"
    assert any(n.startswith("onnxruntime-") for n in manifest["wheels"]["files"])

    rep = run_deploy(device, b1, signing_key[1], smoke_timeout=180)  # no --device-python: wheels only
    assert rep.status == "ok", rep
    pid = json.loads(device.state("service.pid").read_text())["pid"]
    exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert exe.startswith(str(Path(device.root) / "venvs")), exe
    assert_serves_tiny(port)

    # a config-only update: same wheels, so the venv is reused and no wheel is sent again
    b2 = _bundle(tmp_path / "b2", tiny_decoder_dir, "1.0.1", signing_key[0], port, threads=2)
    rep2 = run_deploy(device, b2, signing_key[1], smoke_timeout=180)
    assert rep2.status == "ok", rep2
    built = [e for e in map(json.loads, device.state("audit.jsonl").read_text().splitlines())
             if e["event"] == "venv_built"]
    assert len(built) == 1 and built[0]["version"] == "1.0.0"
    print(f"venv built in {built[0]['seconds']} s; deploy {rep.seconds:.1f} s, redeploy {rep2.seconds:.1f} s")
    wheel_bytes = sum(e["size"] for rel, e in manifest["files"].items() if rel.startswith("wheels/"))
    assert rep2.bytes_sent < rep.bytes_sent - wheel_bytes
