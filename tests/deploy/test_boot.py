"""Power loss in pidfile mode, then the boot entry point; locks judged by liveness on the boot clock.

"Power loss" here: every process of the device user is SIGKILLed (runtime, agent), and the pidfile
is made to look like the previous boot's (another boot id, its pid number now someone else's). Then
the documented entry point runs as the device user: `llmos-agent boot`, via the bundle's bin/llmos-boot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pytest

from llmos_edge.device import agent as agent_mod
from llmos_edge.device import base, lock, pack
from llmos_edge.device.protocol import RC_LOCKED

from .conftest import BundleFactory
from .devices import DEV_USER, Device
from .helpers import run_deploy
from .test_transaction import assert_converged, audit

TEMPLATES = Path(__file__).resolve().parents[2] / "firmware_templates" / "linux-service" / "bin"


def power_loss(dev: Device) -> None:
    """Every process of the device user that belongs to this device ends at once (kill -9)."""
    root = os.path.realpath(dev.root)
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if root.encode() in cmd or cwd.startswith(root):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    pidfile = dev.state("service.pid")
    if pidfile.exists():  # the pid number now belongs to an unrelated process (pid 1) of a new boot
        pidfile.write_text(json.dumps({"pid": 1, "version": "x", "boot_id": "the-boot-before"}))


def boot(dev: Device) -> dict[str, object]:
    """The bundle's boot snippet, as cron @reboot or an init script would run it (as the device user)."""
    script = Path(dev.root) / "current" / "bin" / "llmos-boot"
    cmd = f"{script} --timeout 20"
    proc = subprocess.run(["su", DEV_USER, "-s", "/bin/sh", "-c", cmd], capture_output=True, text=True,
                          timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and out["ok"], proc.stdout + proc.stderr
    return out


def render_bin(name: str, version: str) -> bytes:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = env.from_string((TEMPLATES / f"{name}.j2").read_text()).render(
        bundle={"name": "fake-bundle", "version": version}, target={"name": "host"}
    )
    return text.encode()


def with_boot_files(bundle_for: BundleFactory, dev: Device, version: str, **kw: object) -> Path:
    """A test bundle that also ships the real bin/llmos-boot and bin/llmos-launch templates."""
    extra = {f"bin/{n}": render_bin(n, version) for n in ("llmos-boot", "llmos-launch")}
    return bundle_for(dev, version, extra_files=extra, **kw)


def test_power_loss_then_boot_serves_committed_release(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path]
) -> None:
    pub = signing_key[1]
    run_deploy(device, with_boot_files(bundle_for, device, "1.0.0"), pub)
    run_deploy(device, with_boot_files(bundle_for, device, "2.0.0", seed=2), pub)
    power_loss(device)
    assert device.serving(timeout=0.5) is None
    out = boot(device)
    assert out["serving"] == "2.0.0" and out["started"] is True and out["resolved"] is None
    assert_converged(device, "2.0.0")
    assert os.path.exists("/proc/1")  # the stale pidfile's pid (another boot's) was not touched
    assert boot(device)["started"] is False  # a second run finds it serving: idempotent


@pytest.mark.parametrize(
    ("phase", "after"), [("record", "2.0.0"), ("start-new", "3.0.0"), ("smoke", "3.0.0")]
)
def test_power_loss_inside_activate_then_boot_resolves(
    device: Device, bundle_for: BundleFactory, signing_key: tuple[Path, Path], phase: str, after: str
) -> None:
    pub = signing_key[1]
    run_deploy(device, with_boot_files(bundle_for, device, "2.0.0", seed=2), pub)
    device.faults(phase)
    with pytest.raises(Exception, match="gave no answer"):
        run_deploy(device, with_boot_files(bundle_for, device, "3.0.0", seed=3), pub)
    device.faults()
    power_loss(device)
    out = boot(device)
    resolved = out["resolved"]
    assert isinstance(resolved, dict) and resolved["phase"] == phase
    assert resolved["outcome"] == ("reverted" if after == "2.0.0" else "finished")
    assert out["serving"] == after
    assert_converged(device, after)
    assert [e for e in audit(device) if e["event"] == "boot"][-1]["serving"] == after


def test_launcher_starts_release_with_its_own_venv(tmp_path: Path) -> None:
    """bin/llmos-launch takes <bundle>/venv (the agent links it to <root>/venvs/<key>) over the rest."""
    root = tmp_path / "root"
    release = root / "releases" / "1.0.0"
    (release / "bin").mkdir(parents=True)
    launcher = release / "bin" / "llmos-launch"
    launcher.write_bytes(render_bin("llmos-launch", "1.0.0"))
    launcher.chmod(0o755)
    venv_py = root / "venvs" / "abc" / "bin" / "python3"
    venv_py.parent.mkdir(parents=True)
    venv_py.write_text('#!/bin/sh\necho "VENV ARGS=$*"\n')
    venv_py.chmod(0o755)
    (root / "current").symlink_to("releases/1.0.0")
    env = {"PATH": os.environ["PATH"], "LLMOS_PYTHON": "/nonexistent/python3"}
    cmd = [str(root / "current" / "bin" / "llmos-launch")]
    # no venv link yet: LLMOS_PYTHON (a release without wheels) is what it runs
    assert subprocess.run(cmd, env=env, capture_output=True).returncode != 0
    (release / "venv").symlink_to(root / "venvs" / "abc")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    assert f"VENV ARGS=-m llmos_runtime serve --config {release.resolve()}/config/runtime.json" in out


def test_boot_snippet_installs_cron_line_idempotently(tmp_path: Path) -> None:
    """--install-cron adds one @reboot line for this install root (a fake crontab records it)."""
    root = tmp_path / "root"
    (root / "releases" / "1.0.0" / "bin").mkdir(parents=True)
    script = root / "releases" / "1.0.0" / "bin" / "llmos-boot"
    script.write_bytes(render_bin("llmos-boot", "1.0.0"))
    script.chmod(0o755)
    (root / "current").symlink_to("releases/1.0.0")
    fake = tmp_path / "fakebin"
    fake.mkdir()
    tab = tmp_path / "tab"
    # like the real one, it reads the whole new table before replacing the old
    (fake / "crontab").write_text(f'#!/bin/sh\nif [ "$1" = -l ]; then cat {tab} 2>/dev/null; '
                                  f"else new=$(cat); printf '%s\\n' \"$new\" > {tab}; fi\n")
    (fake / "crontab").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    tab.write_text("0 * * * * something else\n")
    for _ in range(2):
        subprocess.run([str(root / "current" / "bin" / "llmos-boot"), "--install-cron"], env=env, check=True,
                       capture_output=True)
    lines = tab.read_text().splitlines()
    assert lines[0] == "0 * * * * something else"
    real = root.resolve()
    assert lines[1:] == [f"@reboot {real}/current/bin/llmos-boot >>{real}/state/boot.log 2>&1"]


# ---------------------------------------------------------------- locks: liveness, the boot clock
def _holder(root: Path, ttl: float, owner: str = "first") -> subprocess.Popen[bytes]:
    """A real `hold` process that took the session lock."""
    script = root.with_name(f"{root.name}-llmos-agent-{owner}")
    script.write_bytes(pack.agent_script())  # the packed file a device runs
    proc = subprocess.Popen(
        [sys.executable, str(script), "hold", "--root", str(root), "--token", owner, "--owner", owner,
         "--ttl", str(ttl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["locked"] is True
    return proc


def _second_hold(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    rc = agent_mod.main(["hold", "--root", str(root), "--token", "t2", "--owner", "second"])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_clock_step_does_not_expire_a_live_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The device's wall clock jumps 50 years (1970 -> now, as at first NTP sync): the holder is alive
    and within its ttl on the boot clock, so the lock holds and the holder is not ended."""
    first = _holder(tmp_path, ttl=30)
    try:
        real = time.time
        monkeypatch.setattr(lock.time, "time", lambda: real() + 50 * 365 * 86400)
        rc, out = _second_hold(tmp_path, capsys)
        assert rc == RC_LOCKED and out["holder"] == "first"
        assert isinstance(out["held_for"], float) and 0 <= out["held_for"] < 30
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()


def test_dead_holder_frees_lock_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 of the holder: its flock is gone, whatever its record says (no age involved)."""
    first = _holder(tmp_path, ttl=3600)
    first.kill()
    first.wait()
    record = json.loads((tmp_path / "state" / "lock").read_text())
    assert record["pid"] == first.pid and record["boot_id"] == base.boot_id()
    assert lock._lock_info(base.Layout(str(tmp_path))) is None  # a record with no live holder
    proc = _holder(tmp_path, 3600, "second")
    proc.kill()
    proc.wait()


def test_stuck_holder_ended_by_boot_clock_age(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hold session older than its ttl, measured on the boot clock, is ended; a worker never is."""
    first = _holder(tmp_path, ttl=0.5)
    time.sleep(0.8)
    proc = _holder(tmp_path, 3600, "second")
    assert first.wait(5) is not None
    proc.kill()
    proc.wait()
    expired = [json.loads(line) for line in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert expired[-1]["event"] == "lock_expired" and expired[-1]["held_for"] >= 0.5
