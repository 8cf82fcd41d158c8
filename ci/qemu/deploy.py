"""Drive the real deploy (llmos_edge.deploy, the code behind `llmos-edge deploy`) against a HIL device.

The deploy runs in-process through the same library call the CLI makes, with two differences, both
for emulation: SSH keepalive (the CLI's default 2 s x 3 drops a guest whose sshd stalls for seconds
under TCG on a loaded host, so HIL uses 15 s x 8; `llmos-edge deploy --keepalive` does the same) and
the smoke timing budget (`--smoke-latency-scale`). `status` goes through the CLI itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.devices import HilDevice
from llmos_edge.deploy.run import Events
from llmos_edge.errors import LlmosError

KEEPALIVE_INTERVAL_S = 15.0
KEEPALIVE_COUNT_MAX = 8
# TCG runs aarch64 code 10-50x slower than the board (more on a loaded host): the exact rpi5 bundle is
# deployed, and only its smoke timing budget is scaled (first token 2 s -> 200 s, 5 tok/s -> 0.05).
EMULATION_LATENCY_SCALE = 100.0


@dataclass(frozen=True)
class Outcome:
    """What a user would see: the CLI's exit code and message, plus the deploy report when there is one."""

    rc: int
    text: str
    report: dict[str, Any] | None = None


def ssh_args(dev: HilDevice) -> list[str]:
    """Default flags, as a user types them: no --root (deploy takes the bundle's install root, the
    device commands find it)."""
    args = ["--device", dev.address]
    if dev.identity:
        args += ["--identity", str(dev.identity)]
    if dev.known_hosts:
        args += ["--known-hosts", str(dev.known_hosts)]
    return args


def llmos_edge(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """`python -m llmos_edge ARGS` in a child process: the exact CLI path, exit codes included."""
    return subprocess.run([sys.executable, "-m", "llmos_edge", *args], capture_output=True, text=True,
                          timeout=timeout)


def ssh_options(dev: HilDevice) -> Any:
    from llmos_edge.transports.ssh import SshOptions

    base = SshOptions()
    return SshOptions(known_hosts=dev.known_hosts or base.known_hosts, identity=dev.identity,
                      keepalive_interval=KEEPALIVE_INTERVAL_S, keepalive_count_max=KEEPALIVE_COUNT_MAX,
                      connect_timeout=60.0)


class PhaseClock(Events):
    """Seconds per deploy phase (preflight, transfer, install, venv, activate = restart + smoke)."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []
        self._current: tuple[str, float] | None = None

    def phase(self, name: str) -> None:
        self.close()
        self._current = (name, time.monotonic())

    def close(self) -> None:
        if self._current:
            name, t0 = self._current
            self.phases.append((name, time.monotonic() - t0))
            self._current = None


def latency_scale(dev: HilDevice) -> float:
    return EMULATION_LATENCY_SCALE if dev.name.startswith("qemu") else 1.0


def deploy(dev: HilDevice, bundle: Path, pubkey: Path, *, smoke_timeout: float = 900,
           target: str | None = None, clock: PhaseClock | None = None) -> Outcome:
    """Verify, preflight, transfer, install, activate + on-device smoke; rollback is the agent's."""
    from llmos_edge.deploy.preflight import PreflightOptions
    from llmos_edge.deploy.run import DeployOptions, deploy_to
    from llmos_edge.deploy.source import load_bundle

    try:
        src = load_bundle(bundle, pubkey, allow_unsigned=False)
        opts = DeployOptions(smoke_timeout=smoke_timeout,
                             smoke_latency_scale=latency_scale(dev),
                             preflight=PreflightOptions(expected_target=target or dev.target))
        rep = asyncio.run(deploy_to(dev.address, src, opts, ssh_options(dev), clock))
    except LlmosError as exc:
        return Outcome(exc.exit_code, exc.render())
    finally:
        if clock:
            clock.close()
    return Outcome(0, f"{rep.status}: {rep.message}", rep.to_json())


def status(dev: HilDevice) -> dict[str, Any]:
    proc = llmos_edge("status", *ssh_args(dev), "--json", timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"llmos-edge status failed ({proc.returncode}): {proc.stderr[-1500:]}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data
