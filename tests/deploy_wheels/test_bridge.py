"""An esp32s3-host-offload bundle (real make_bundle, real tiny model, real bridge package) deployed
to a supervised device (no systemd here): the agent runs the runtime AND bin/llmos-bridge as
pidfile-managed processes, replaces both on activate and brings the old ones back on rollback.

No ESP32 is attached: the bridge's port (set through state/bridge.env, as an operator would) does
not exist, so the bridge logs that and keeps retrying; the test asserts it is alive and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import time
from pathlib import Path

import pytest

from llmos_edge.deploy import commands
from tests.deploy.devices import DEV_USER, Device, free_port
from tests.deploy.helpers import run_deploy


def _bundle(out: Path, model: Path, version: str, key: Path, port: int) -> Path:
    from llmos_edge.bundle.build import make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.esp32.hostpkg import host_bundle_target
    from llmos_edge.spec import load_target
    from llmos_edge.spec.models import Golden

    esp = load_target("esp32s3-host-offload")  # its host is a Pi; here the ESP32 hangs off this machine
    assert esp.esp32 is not None
    esp = esp.model_copy(update={"esp32": esp.esp32.model_copy(update={"host_target": "host"})})
    spec = BundleSpec(
        target=host_bundle_target(esp),
        recipe="tiny",
        version=version,
        models={"tiny": model},
        golden=(Golden(prompt="Say hi", max_tokens=4),),
        signing_key=key,
        wheels=False,
        config_overrides={"port": port, "threads": 1},
    )
    return make_bundle(spec, out).folder


def _pidfile(dev: Device, name: str) -> dict[str, object]:
    info: dict[str, object] = json.loads(dev.state(f"{name}.pid").read_text())
    return info


def _alive(pid: object) -> bool:
    try:
        os.kill(int(str(pid)), 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: object) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _cwd(pid: object) -> str:
    return os.readlink(f"/proc/{pid}/cwd")


def _wait_log(path: Path, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{path.name} never said {text!r}:\n{log[-1500:]}")


def _set_bridge_port(dev: Device, port: str) -> None:
    """state/bridge.env, as an operator overrides the unit's default port (/dev/ttyACM0)."""
    state = Path(dev.root) / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "bridge.env").write_text(f"LLMOS_BRIDGE_PORT={port}\n")
    user = pwd.getpwnam(DEV_USER)
    for p in (Path(dev.root), state, state / "bridge.env"):
        os.chown(p, user.pw_uid, user.pw_gid)


def test_bridge_runs_beside_runtime_and_follows_rollback(
    device: Device,
    tiny_decoder_dir: Path,
    tmp_path: Path,
    signing_key: tuple[Path, Path],
    device_python: str,
) -> None:
    device.runtime_port = free_port()
    missing_port = str(device.home / "no-such-ttyACM")
    _set_bridge_port(device, missing_port)
    b1 = _bundle(tmp_path / "b1", tiny_decoder_dir, "1.0.0", signing_key[0], device.runtime_port)
    assert (b1 / "bin" / "llmos-bridge").is_file() and (b1 / "systemd" / "llmos-bridge.service").is_file()
    rep = run_deploy(device, b1, signing_key[1], device_python=device_python, smoke_timeout=120)
    assert rep.status == "ok", rep

    svc1, br1 = _pidfile(device, "service"), _pidfile(device, "bridge")
    assert svc1["version"] == br1["version"] == "1.0.0"
    assert _alive(svc1["pid"]) and _alive(br1["pid"])
    cmd = _cmdline(br1["pid"])  # the unit's ExecStart arguments, with bridge.env's port and the runtime URL
    assert "llmos_bridge" in cmd and missing_port in cmd
    assert f"--runtime http://127.0.0.1:{device.runtime_port}" in cmd
    _wait_log(device.state("bridge.log"), f"serial port {missing_port} does not exist")

    b2 = _bundle(tmp_path / "b2", tiny_decoder_dir, "1.0.1", signing_key[0], device.runtime_port)
    rep2 = run_deploy(device, b2, signing_key[1], device_python=device_python, smoke_timeout=120)
    assert rep2.status == "ok", rep2
    svc2, br2 = _pidfile(device, "service"), _pidfile(device, "bridge")
    assert svc2["version"] == br2["version"] == "1.0.1"
    assert _alive(br2["pid"]) and not _alive(br1["pid"]) and not _alive(svc1["pid"])
    assert _cwd(br2["pid"]).endswith("releases/1.0.1")

    rb = asyncio.run(commands.rollback(device.address, device.options(), device.root, timeout=120))
    assert rb["active"] == "1.0.0"
    svc3, br3 = _pidfile(device, "service"), _pidfile(device, "bridge")
    assert svc3["version"] == br3["version"] == "1.0.0"
    assert _alive(svc3["pid"]) and _alive(br3["pid"])
    assert not _alive(br2["pid"]) and not _alive(svc2["pid"])
    assert _cwd(br3["pid"]).endswith("releases/1.0.0")
    status = asyncio.run(commands.status(device.address, device.options(), device.root))
    assert status["bridge_pid"] == br3["pid"] and status["listening"] is True
    time.sleep(2)  # still retrying, not crashed
    assert _alive(br3["pid"])


BRIDGE_OK = b"#!/bin/sh\necho \"stand-in bridge $*\"\nexec sleep 3600\n"
BRIDGE_CRASH = b"#!/bin/sh\necho 'stand-in bridge: cannot open the port (on purpose)'\nexit 3\n"


def test_bridge_that_exits_fails_the_release_and_old_pair_returns(
    device: Device, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    """Fast, with tests/deploy's small bundles and a shell stand-in for bin/llmos-bridge (no unit file:
    the agent's fallback arguments). A release whose bridge dies is rolled back like a failed smoke."""
    from llmos_edge.deploy.run import SmokeFailed
    from tests.deploy.bundles import make_bundle

    def bundle(version: str, bridge: bytes | None) -> Path:
        extra = {"bin/llmos-bridge": bridge} if bridge else {}
        port = device.runtime_port
        return make_bundle(tmp_path / "b", version, port=port, key=signing_key[0], extra_files=extra)

    assert run_deploy(device, bundle("1.0.0", BRIDGE_OK), signing_key[1]).status == "ok"
    br1 = _pidfile(device, "bridge")
    assert _alive(br1["pid"])
    log = _wait_log(device.state("bridge.log"), "--port")
    assert f"--runtime http://127.0.0.1:{device.runtime_port}" in log
    with pytest.raises(SmokeFailed) as info:
        run_deploy(device, bundle("2.0.0", BRIDGE_CRASH), signing_key[1])
    assert info.value.restored == "1.0.0"
    assert "bridge of 2.0.0 exited" in info.value.smoke and "on purpose" in info.value.smoke
    br = _pidfile(device, "bridge")
    assert br["version"] == "1.0.0" and _alive(br["pid"]) and device.serving() == "1.0.0"

    # a release without a bridge stops the old one
    assert run_deploy(device, bundle("3.0.0", None), signing_key[1]).status == "ok"
    assert not _alive(br["pid"]) and not device.state("bridge.pid").exists()
    assert device.serving() == "3.0.0"
