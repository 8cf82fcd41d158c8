"""One deploy to one device: probe, preflight, lock, transfer, install, activate + smoke, report."""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from ..device import protocol as P
from ..device.protocol import RC_SMOKE, RC_VERIFY
from ..errors import CheckFailed, LlmosError
from ..transports.base import Transport
from ..transports.ssh import SshOptions
from . import install, transfer
from .preflight import AlreadyActive, PreflightOptions, check_resources, check_version, preflight
from .remote import Agent, AgentFailed
from .source import BundleSource


@dataclass(frozen=True)
class DeployOptions:
    root: str | None = None  # None: the bundle's install root (deploy/install.py)
    service: str | None = None  # systemd | pidfile; None: the bundle's target says
    remote_python: str = "python3"  # runs the agent
    device_python: str | None = None  # runs the runtime when the bundle has no wheels
    preflight: PreflightOptions = field(default_factory=PreflightOptions)
    allow_unsigned: bool = False
    dry_run: bool = False
    smoke_timeout: float = 120.0
    smoke_latency_scale: float = 1.0  # >1 only for slow stand-ins of the target (QEMU HIL)
    lock_ttl: float = 3600.0


class Events:
    """Progress callbacks; the CLI and the fleet table override them."""

    def phase(self, name: str) -> None: ...

    def start_bytes(self, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass
class DeployReport:
    device: str
    status: str  # ok | up-to-date | failed | refused | rolled-back | dry-run | skipped
    version: str
    previous: str | None = None
    message: str = ""
    hints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log_excerpt: str = ""
    smoke: str = ""  # the on-device smoke test's output (verdict, limits, answers)
    bytes_total: int = 0
    bytes_needed: int = 0
    bytes_sent: int = 0
    files_sent: int = 0
    files_reused: int = 0
    resent: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def owner_label() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


async def deploy(
    transport: Transport, bundle: BundleSource, opts: DeployOptions, events: Events | None = None
) -> DeployReport:
    """Raise LlmosError on refusal or failure (the device keeps its last good release)."""
    ev = events or Events()
    t0 = time.monotonic()
    inst = install.resolve(bundle, opts.root, opts.service)
    agent = Agent(transport, inst.root, opts.remote_python)
    ev.phase("preflight")
    await _check_writable(transport, opts, inst)  # before the agent touches the root at all
    probe = await agent.call(P.PROBE)  # it first finishes or reverts an activation a kill interrupted
    resolved = resolved_note(probe.get("resolved"))
    try:
        notes = install.check_install(probe, inst)
        notes = [*resolved, *notes, *preflight(probe, bundle, opts.preflight)]
    except AlreadyActive as exc:
        return DeployReport(
            transport.name,
            "up-to-date",
            bundle.version,
            previous=probe.get("previous"),
            message=exc.message,
            hints=exc.hints,
            notes=resolved,
            seconds=time.monotonic() - t0,
        )
    if bundle.signature is None:
        notes.append("unsigned bundle accepted by --allow-unsigned")
    root = str(probe["root"])
    agent.root = root
    report = DeployReport(transport.name, "ok", bundle.version, previous=probe.get("current"), notes=notes)
    plan = await transfer.plan_transfer(agent, bundle)
    check_resources(probe, bundle, plan.stats.bytes_needed, opts.preflight.disk_margin_mb)
    _fill(report, plan.stats)
    if opts.dry_run:
        return _dry_run_report(report, bundle, plan)
    token = uuid.uuid4().hex
    holder = await agent.hold(token, owner_label(), opts.lock_ttl)
    try:
        # another deploy (or the orphaned worker `hold` waited for) may have finished in the meantime
        recheck = await agent.call(P.PROBE)
        notes += resolved_note(recheck.get("resolved"))
        if (recheck.get("current"), recheck.get("serving")) != (probe.get("current"), probe.get("serving")):
            try:
                check_version(recheck, bundle, opts.preflight)
            except AlreadyActive as exc:
                report.status, report.message, report.notes = "up-to-date", exc.message, notes
                report.seconds = time.monotonic() - t0
                return report
        await _install(agent, bundle, opts, plan, token, root, ev, notes)
        ev.phase("activate")
        res = await _activate(agent, bundle, opts, token, report)
        report.message = f"{bundle.version} is active (previous: {res.get('previous')})"
        report.smoke = str(res.get("smoke", ""))
    finally:
        await holder.close()
    _fill(report, plan.stats)
    report.seconds = time.monotonic() - t0
    return report


async def _check_writable(transport: Transport, opts: DeployOptions, inst: install.InstallSettings) -> None:
    res = await transport.exec(install.writable_argv(opts.remote_python, inst.root), timeout=120)
    answer = res.stdout.decode(errors="replace") if res.rc == 0 else "0"
    install.check_writable(transport.name, inst, answer)


def resolved_note(resolved: Any) -> list[str]:
    """What the agent did about an activation it found unfinished (its worker was killed)."""
    if not isinstance(resolved, dict):
        return []
    if resolved.get("outcome") == "in-progress":
        return [f"an activation of {resolved.get('version')} is still running on the device"]
    return [
        f"the device had an unfinished activation of {resolved.get('version')} "
        f"(interrupted at {resolved.get('phase')}); it was {resolved.get('outcome')}, "
        f"now serving {resolved.get('serving') or 'nothing'}"
    ]


async def _install(
    agent: Agent,
    bundle: BundleSource,
    opts: DeployOptions,
    plan: transfer.Plan,
    token: str,
    root: str,
    ev: Events,
    notes: list[str],
) -> None:
    ev.phase("transfer")
    ev.start_bytes(plan.stats.bytes_needed)
    await transfer.send(agent, bundle, plan, token, root, ev.advance)
    ev.phase("install")
    data = {"manifest": bundle.manifest_text, "signature": bundle.signature, "audit": {"notes": notes}}
    try:
        await agent.call(P.INSTALL, "--token", token, "--version", bundle.version, data=data)
    except AgentFailed as exc:
        if exc.rc != RC_VERIFY:
            raise
        await transfer.resend(
            agent, bundle, list(exc.payload.get("missing", [])), token, root, plan.stats, ev.advance
        )
        await agent.call(P.INSTALL, "--token", token, "--version", bundle.version, data=data)
    await agent.call(P.CLEAN_STAGING, "--token", token)
    if any(rel.startswith("wheels/") and rel.endswith(".whl") for rel in bundle.files):
        ev.phase("venv")  # built (or reused) before the running release is stopped
        py = ["--python", opts.device_python] if opts.device_python else []
        await agent.call(P.PREPARE, "--token", token, "--version", bundle.version, *py, timeout=1800)


async def _activate(
    agent: Agent, bundle: BundleSource, opts: DeployOptions, token: str, report: DeployReport
) -> dict[str, Any]:
    argv = ["--token", token, "--version", bundle.version, "--timeout", str(opts.smoke_timeout)]
    if bundle.target:
        argv += ["--target", bundle.target]
    if opts.device_python:
        argv += ["--python", opts.device_python]
    if opts.smoke_latency_scale != 1:
        argv += ["--latency-scale", repr(opts.smoke_latency_scale)]
    try:
        return await agent.call(P.ACTIVATE, *argv, timeout=opts.smoke_timeout * 3 + 60)
    except AgentFailed as exc:
        if exc.rc != RC_SMOKE:
            raise
        restored = exc.payload.get("restored")
        back = (
            f"rolled back to {restored}, which serves again" if restored else "no earlier release to restore"
        )
        raise SmokeFailed(
            f"{agent.transport.name}: release {bundle.version} failed its smoke test; {back}",
            smoke=str(exc.payload.get("smoke", "")),
            log=str(exc.payload.get("log", "")),
            restored=restored,
        ) from None


class SmokeFailed(CheckFailed):
    """The new release did not pass on the device and was rolled back."""

    def __init__(self, message: str, *, smoke: str, log: str, restored: str | None) -> None:
        super().__init__(
            message,
            hints=[
                "see the smoke output and device log excerpt above",
                "the release is marked failed on the device; "
                "fix it and build a new version (or pass --retry-failed)",
            ],
        )
        self.smoke = smoke
        self.log = log
        self.restored = restored

    def render(self) -> str:
        extra = (
            f"\n--- smoke output ---\n{self.smoke.strip()}"
            f"\n--- device log (last lines) ---\n{self.log.strip()}"
        )
        return super().render() + extra


def _dry_run_report(report: DeployReport, bundle: BundleSource, plan: transfer.Plan) -> DeployReport:
    report.status = "dry-run"
    st = plan.stats
    report.message = (
        f"would send {len(plan.missing)} file(s), {st.bytes_needed} bytes "
        f"({st.resumed_bytes} already staged); "
        f"{st.files_reused} file(s) already on the device; then install and activate {bundle.version} "
        f"(current: {report.previous or 'none'}), keeping {report.previous or 'nothing'} as previous"
    )
    by_sha: dict[str, str] = {}
    for rel, entry in sorted(bundle.files.items()):
        by_sha.setdefault(entry["sha256"], rel)
    report.notes += [
        f"send {by_sha[sha]} ({bundle.blobs()[sha].size - off} bytes)"
        for sha, off in sorted(plan.missing.items(), key=lambda kv: by_sha[kv[0]])
    ]
    return report


def _fill(report: DeployReport, stats: transfer.TransferStats) -> None:
    report.bytes_total = stats.bytes_total
    report.bytes_needed = stats.bytes_needed
    report.bytes_sent = stats.bytes_sent
    report.files_sent = stats.files_sent
    report.files_reused = stats.files_reused
    report.resent = list(stats.resent)


def failure_report(device: str, version: str, exc: LlmosError, seconds: float) -> DeployReport:
    status = "rolled-back" if isinstance(exc, SmokeFailed) else "failed"
    from ..errors import UserError

    if isinstance(exc, UserError):
        status = "refused"
    log = exc.log if isinstance(exc, SmokeFailed) else ""
    return DeployReport(
        device, status, version, message=exc.message, hints=list(exc.hints), log_excerpt=log, seconds=seconds
    )


async def open_transport(address: str, ssh: SshOptions | None = None) -> Transport:
    """`local` is this machine; anything else is user@host[:port] over SSH."""
    if address == "local":
        from ..transports.local import LocalTransport

        return LocalTransport()
    from ..transports.ssh import connect

    return await connect(address, ssh)


async def deploy_to(
    address: str,
    bundle: BundleSource,
    opts: DeployOptions,
    ssh: SshOptions | None = None,
    events: Events | None = None,
) -> DeployReport:
    transport = await open_transport(address, ssh)
    try:
        return await deploy(transport, bundle, opts, events)
    finally:
        await transport.close()
