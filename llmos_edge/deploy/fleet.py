"""Fleet rollouts: an inventory of devices, bounded parallelism, a canary rule, a JSON report."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LlmosError, SpecError
from ..transports.ssh import SshOptions
from .preflight import PreflightOptions
from .run import DeployOptions, DeployReport, Events, deploy_to, failure_report
from .source import BundleSource

_SUCCESS = ("ok", "up-to-date", "dry-run")
_KNOWN_VARS = {"root", "service", "python", "remote_python", "jump", "identity", "smoke_timeout"}


@dataclass(frozen=True)
class FleetDevice:
    name: str
    address: str
    target: str | None
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    path: Path
    devices: list[FleetDevice]
    defaults: dict[str, Any]


def load_inventory(path: Path) -> Inventory:
    """[defaults] + [[device]] tables: name, address (user@host[:port]), target, [device.vars]."""
    from ..spec.limits import read_toml

    raw = read_toml(path)  # size and nesting limits; SpecError names the file
    defaults = raw.get("defaults", {})
    devices, seen = [], set()
    for i, d in enumerate(raw.get("device", [])):
        for key in ("name", "address"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise SpecError(
                    str(path),
                    f"device[{i}].{key}",
                    "is required (a string)",
                    hints=['e.g. name = "pi-1", address = "pi@10.0.0.5"'],
                )
        if d["name"] in seen:
            raise SpecError(str(path), f"device[{i}].name", f"duplicate device name {d['name']!r}")
        seen.add(d["name"])
        variables = {**defaults.get("vars", {}), **d.get("vars", {})}
        devices.append(
            FleetDevice(d["name"], d["address"], d.get("target") or defaults.get("target"), variables)
        )
    if not devices:
        raise SpecError(
            str(path),
            "device",
            "the inventory lists no devices",
            hints=["add [[device]] tables with name, address and target"],
        )
    return Inventory(path, devices, defaults)


def device_options(
    dev: FleetDevice, base: DeployOptions, ssh: SshOptions
) -> tuple[DeployOptions, SshOptions]:
    v = dev.vars
    opts = dataclasses.replace(
        base,
        root=str(v["root"]) if "root" in v else base.root,
        service=str(v["service"]) if "service" in v else base.service,
        device_python=v.get("python", base.device_python),
        remote_python=str(v.get("remote_python", base.remote_python)),
        smoke_timeout=float(v.get("smoke_timeout", base.smoke_timeout)),
        preflight=dataclasses.replace(base.preflight, expected_target=dev.target),
    )
    ssh_opts = dataclasses.replace(
        ssh,
        jump=v.get("jump", ssh.jump),
        identity=Path(v["identity"]).expanduser() if "identity" in v else ssh.identity,
    )
    return opts, ssh_opts


class FleetView:
    """Receives per-device progress; the CLI renders it as a live table."""

    def events_for(self, name: str) -> Events:
        return Events()

    def finished(self, name: str, report: DeployReport) -> None: ...


@dataclass
class FleetResult:
    reports: list[DeployReport]
    stopped_by_canary: bool
    version: str

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.reports:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "stopped_by_canary": self.stopped_by_canary,
            "summary": self.summary(),
            "devices": [r.to_json() for r in self.reports],
        }

    @property
    def ok(self) -> bool:
        return all(r.status in _SUCCESS for r in self.reports)


async def run_fleet(
    inv: Inventory,
    bundle: BundleSource,
    base: DeployOptions,
    ssh: SshOptions,
    *,
    parallel: int = 4,
    max_failures: int = 1,
    view: FleetView | None = None,
) -> FleetResult:
    """Deploy to every device, at most `parallel` at once; after `max_failures` failures start no more."""
    view = view or FleetView()
    sem = asyncio.Semaphore(max(1, parallel))
    failures = 0
    reports: dict[str, DeployReport] = {}

    async def one(dev: FleetDevice) -> None:
        nonlocal failures
        async with sem:
            if failures >= max_failures:
                reports[dev.name] = DeployReport(
                    dev.name,
                    "skipped",
                    bundle.version,
                    message=f"not started: canary stopped the rollout after {failures} failure(s)",
                )
            else:
                reports[dev.name] = await _deploy_one(dev, bundle, base, ssh, view)
                if reports[dev.name].status not in _SUCCESS:
                    failures += 1
            view.finished(dev.name, reports[dev.name])

    await asyncio.gather(*(one(d) for d in inv.devices))
    ordered = [reports[d.name] for d in inv.devices]
    return FleetResult(ordered, any(r.status == "skipped" for r in ordered), bundle.version)


async def _deploy_one(
    dev: FleetDevice, bundle: BundleSource, base: DeployOptions, ssh: SshOptions, view: FleetView
) -> DeployReport:
    opts, ssh_opts = device_options(dev, base, ssh)
    t0 = time.monotonic()
    try:
        report = await deploy_to(dev.address, bundle, opts, ssh_opts, view.events_for(dev.name))
    except LlmosError as exc:
        report = failure_report(dev.address, bundle.version, exc, time.monotonic() - t0)
    report.device = dev.name
    report.notes += [f"{k}={v}" for k, v in sorted(dev.vars.items()) if k not in _KNOWN_VARS]
    return report


__all__ = [
    "FleetDevice",
    "FleetResult",
    "FleetView",
    "Inventory",
    "PreflightOptions",
    "load_inventory",
    "run_fleet",
]
