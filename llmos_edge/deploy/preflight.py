"""Checks on what the device reported, before anything is sent. Each refusal says what to do."""

from __future__ import annotations

import platform as host_platform
import re
from dataclasses import dataclass
from typing import Any

from ..errors import DeviceError, UserError
from .source import BundleSource

_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64", "armhf": "armv7l", "armv7": "armv7l"}


class AlreadyActive(UserError):
    """The device already runs this version: nothing to do (a fleet re-run counts it as up to date)."""


@dataclass(frozen=True)
class PreflightOptions:
    expected_target: str | None = None
    allow_downgrade: bool = False
    retry_failed: bool = False
    reinstall: bool = False
    disk_margin_mb: int = 64


def norm_arch(arch: str) -> str:
    arch = arch.lower()
    if arch == "native":
        arch = host_platform.machine().lower()
    return _ARCH_ALIASES.get(arch, arch)


def version_key(version: str) -> tuple[tuple[int, Any], ...]:
    """1.10.0 > 1.9.2; numbers compare as numbers, other parts as text (after numbers)."""
    parts = re.split(r"[.\-+_]", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def check_platform(probe: dict[str, Any], bundle: BundleSource) -> None:
    want = bundle.platform
    dev = f"the device ({probe.get('hostname')})"
    if want.get("arch") and norm_arch(str(want["arch"])) != norm_arch(str(probe["arch"])):
        raise UserError(
            f"bundle {bundle.name} {bundle.version} is built for {want['arch']}, but {dev} is "
            f"{probe['arch']}",
            hints=[
                "build the bundle for this device's target (llmos-edge build --target ...)",
                "or pick the right device",
            ],
        )
    if probe.get("os") and probe["os"] != "linux":
        raise UserError(f"{dev} runs {probe['os']}; bundles install on Linux devices only")
    libc = str(want.get("libc") or "")
    if libc and not libc.startswith(str(probe.get("libc", ""))):
        raise UserError(
            f"bundle needs libc {libc}, {dev} has {probe.get('libc')} {probe.get('libc_version')}",
            hints=["build for a target with the device's C library"],
        )
    py = str(want.get("python") or "")
    if py and not _python_ok(py, str(probe["python"])):
        raise UserError(
            f"bundle needs Python {py}, {dev} has Python {probe['python']}",
            hints=["build for the device's Python version", "or install that Python on the device"],
        )


def _python_ok(want: str, have: str) -> bool:
    if want.startswith(">="):
        return version_key(have) >= version_key(want[2:])
    return have == want or have.startswith(want + ".")


def check_target(probe: dict[str, Any], bundle: BundleSource, expected: str | None) -> None:
    installed = (probe.get("device") or {}).get("target")
    for source, name in (("the inventory/--target", expected), ("the device's installed bundles", installed)):
        if name and bundle.target and name != bundle.target:
            raise UserError(
                f"bundle is for target {bundle.target!r}, but {source} says {name!r}",
                hints=[
                    "deploy the bundle built for this device's target",
                    "or fix the target in the inventory",
                ],
            )


def check_resources(probe: dict[str, Any], bundle: BundleSource, needed_bytes: int, margin_mb: int) -> None:
    """needed_bytes: what the device lacks (content it already holds takes no new space)."""
    need = needed_bytes + margin_mb * 2**20
    if probe["disk_free"] < need:
        raise DeviceError(
            f"not enough disk on the device: need {need / 1e6:.0f} MB (bundle + {margin_mb} MB margin), "
            f"{probe['disk_free'] / 1e6:.0f} MB free under {probe['root']}",
            hints=["free space with: llmos-edge releases --device ... --keep 1", "or use a smaller bundle"],
        )
    budget = bundle.memory_budget_mb()
    if budget and probe.get("mem_available", -1) >= 0 and probe["mem_available"] < budget * 2**20:
        raise DeviceError(
            f"the device has {probe['mem_available'] / 2**20:.0f} MiB of RAM available, "
            f"the bundle's budget is "
            f"{budget} MiB",
            hints=["stop other services on the device", "or build for a smaller model/budget"],
        )


def check_version(probe: dict[str, Any], bundle: BundleSource, opts: PreflightOptions) -> list[str]:
    notes: list[str] = []
    failed = probe.get("failed") or {}
    if bundle.version in failed and not opts.retry_failed:
        raise UserError(
            f"version {bundle.version} already failed on this device: "
            f"{str(failed[bundle.version].get('reason', ''))[-200:]}",
            hints=["fix the bundle and build a new version", "or pass --retry-failed"],
        )
    current = probe.get("current")  # the committed release (the agent resolved any pending one)
    if not current:
        return notes
    if current == bundle.version and not opts.reinstall:
        if probe.get("serving") == current:  # up to date = committed and serving, nothing less
            raise AlreadyActive(
                f"version {current} is already active on the device",
                hints=["nothing to do; pass --reinstall to deploy it again"],
            )
        notes.append(f"{current} is committed but not serving ({probe.get('serving') or 'nothing'} is): "
                     "starting it again")
        return notes
    if version_key(bundle.version) < version_key(current):
        if not opts.allow_downgrade:
            raise UserError(
                f"{bundle.version} is older than the installed {current}; refusing a downgrade",
                hints=[
                    f"pass --allow-downgrade to install {bundle.version} anyway (it is logged)",
                    "or use: llmos-edge rollback --device ...",
                ],
            )
        notes.append(f"downgrade {current} -> {bundle.version} allowed by --allow-downgrade")
    return notes


def preflight(probe: dict[str, Any], bundle: BundleSource, opts: PreflightOptions) -> list[str]:
    """Raise on the first refusal; return notes to record (e.g. an allowed downgrade)."""
    if probe.get("lock"):
        lock = probe["lock"]
        from .remote import failure

        holder = lock.get("owner") or lock.get("work")
        raise failure(
            str(probe.get("hostname")),
            10,
            {"holder": holder, "held_for": lock.get("held_for"), "holder_pid": lock.get("pid")},
        )
    check_platform(probe, bundle)
    check_wheels(probe, bundle)
    check_target(probe, bundle, opts.expected_target)
    return check_version(probe, bundle, opts)


def check_wheels(probe: dict[str, Any], bundle: BundleSource) -> None:
    """Every offline wheel must install on the device's Python, arch and libc (its tags say so)."""
    from .wheeltags import DevicePlatform, wheel_problem

    dev = DevicePlatform(
        python=str(probe["python"]),
        arch=norm_arch(str(probe["arch"])),
        libc=str(probe.get("libc") or "unknown"),
        libc_version=str(probe.get("libc_version") or ""),
    )
    names = sorted(rel[len("wheels/") :] for rel in bundle.files if rel.startswith("wheels/"))
    bad = [f"{n} {why}" for n in names if n.endswith(".whl") and (why := wheel_problem(n, dev))]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise UserError(
            f"bundle {bundle.name} {bundle.version}: its offline wheels do not install on the device "
            f"({probe.get('hostname')}: Python {dev.python}, {dev.arch}, {dev.libc} {dev.libc_version}): "
            + "; ".join(bad[:3])
            + more,
            hints=[
                f"build the bundle for a target whose platform.python is {dev.python} "
                "and whose wheel_platforms match the device",
                "or build with --no-wheels and pass --device-python PATH (a python with the runtime's deps)",
            ],
        )
