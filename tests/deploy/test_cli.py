"""The commands a technician types, run as real processes: exit codes, messages, JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import BundleFactory
from .devices import Device, start_device


def cli(dev: Device, *args: str) -> subprocess.CompletedProcess[str]:
    common = ["--root", dev.root, "--known-hosts", str(dev.known_hosts), "--identity", str(dev.identity)]
    cmd = [sys.executable, "-m", "llmos_edge", args[0], *args[1:], *common]
    if "--inventory" not in args:
        cmd += ["--device", dev.address]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_deploy_and_device_commands(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], tmp_path: Path
) -> None:
    pub = str(signing_key[1])
    before = device.snapshot()
    dry = cli(device, "deploy", str(bundle_for(device, "1.0.0")), "--key", pub, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would send" in dry.stdout and device.snapshot() == before
    ok = cli(
        device, "deploy", str(bundle_for(device, "1.0.0")), "--key", pub, "--report", str(tmp_path / "r.json")
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok: 1.0.0 is active" in ok.stdout
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "ok"
    cli(device, "deploy", str(bundle_for(device, "1.1.0")), "--key", pub)
    down = cli(device, "deploy", str(bundle_for(device, "0.1.0")), "--key", pub)
    assert down.returncode == 2 and "Things to try" in down.stderr and "--allow-downgrade" in down.stderr
    st = cli(device, "status", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["current"] == "1.1.0"
    rb = cli(device, "rollback")
    assert rb.returncode == 0 and "active: 1.0.0" in rb.stdout and device.serving() == "1.0.0"
    logs = cli(device, "logs", "--lines", "100")
    assert "rollback" in logs.stdout
    rel = cli(device, "releases", "--json")
    assert {r["version"] for r in json.loads(rel.stdout)["releases"]} == {"1.0.0", "1.1.0"}


def test_exit_codes_for_device_problems(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    device.known_hosts.write_text("")
    res = cli(device, "deploy", str(bundle_for(device, "1.0.0")), "--key", str(signing_key[1]))
    assert res.returncode == 3 and "--accept-host-key SHA256:" in res.stderr
    fp = res.stderr.split("--accept-host-key ")[1].split()[0]
    res = cli(device, "status", "--accept-host-key", fp)
    assert res.returncode == 0, res.stderr
    bad = cli(
        device,
        "deploy",
        str(bundle_for(device, "2.0.0", behaviour="smoke-fail")),
        "--key",
        str(signing_key[1]),
        "--smoke-timeout",
        "5",
    )
    assert bad.returncode == 4 and "smoke" in bad.stderr and "golden answer mismatch" in bad.stderr


def test_fleet_cli_report(
    device: Device,
    bundle_for: BundleFactory,
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    client_key: tuple[Path, Path],
) -> None:
    """Two loopback devices from an inventory; the second is listed with another target (refused)."""
    d2dir = tmp_path / "d2"
    d2dir.mkdir()
    dev2 = start_device(d2dir, client_key[0], client_key[1], runtime_port=device.runtime_port)
    try:
        device.known_hosts.write_text(device.host_key_line() + dev2.host_key_line())
        inv = tmp_path / "fleet.toml"
        inv.write_text(
            f'[[device]]\nname = "a"\naddress = "{device.address}"\ntarget = "host"\n'
            f'[device.vars]\nroot = "{device.root}"\n\n'
            f'[[device]]\nname = "b"\naddress = "{dev2.address}"\ntarget = "rpi5"\n'
            f'[device.vars]\nroot = "{dev2.root}"\n'
        )
        res = cli(
            device,
            "deploy",
            str(bundle_for(device, "1.0.0")),
            "--key",
            str(signing_key[1]),
            "--inventory",
            str(inv),
            "--parallel",
            "1",
            "--max-failures",
            "3",
            "--report",
            str(tmp_path / "fleet.json"),
        )
        assert res.returncode == 3, res.stderr
        report = json.loads((tmp_path / "fleet.json").read_text())
        assert [d["status"] for d in report["devices"]] == ["ok", "refused"]
        assert "rpi5" in report["devices"][1]["message"]
        assert "a" in res.stdout and "refused" in res.stdout
    finally:
        dev2.stop()


def test_kill_mid_activate_as_typed(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    """`deploy` killed after the switch, then the commands as typed: status says what it resolved
    and shows committed = serving; the next plain deploy is up to date (committed and serving)."""
    pub = str(signing_key[1])
    assert cli(device, "deploy", str(bundle_for(device, "1.0.0")), "--key", pub).returncode == 0
    b2 = str(bundle_for(device, "2.0.0", seed=2))
    device.faults("switch")
    cut = cli(device, "deploy", b2, "--key", pub)
    assert cut.returncode == 3, cut.stderr
    assert device.current() == "2.0.0" and device.serving() == "1.0.0"  # torn: status must not lie
    device.faults()
    st = cli(device, "status")
    assert st.returncode == 0, st.stderr
    assert "unfinished activation of 2.0.0 (interrupted at switch); it was finished" in st.stdout
    assert "serving" in st.stdout and "WARNING" not in st.stdout
    again = cli(device, "deploy", b2, "--key", pub)
    assert again.returncode == 0 and "up-to-date" in again.stdout, again.stdout + again.stderr
    assert device.serving() == "2.0.0"
