"""deploy / status / rollback / logs / releases: thin click commands over llmos_edge.deploy."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import UserError
from .output import emit_json, json_option, table

F = Callable[..., Any]


def ssh_options(f: F) -> F:
    """--device/--root plus the SSH settings, handed to the command as one `ssh` SshOptions."""

    @functools.wraps(f)
    def wrapper(**kw: Any) -> Any:
        from ..transports.ssh import SshOptions

        base = SshOptions()
        kw["ssh"] = SshOptions(
            known_hosts=kw.pop("known_hosts") or base.known_hosts,
            accept_host_key=kw.pop("accept_host_key"),
            identity=kw.pop("identity"),
            jump=kw.pop("jump"),
            keepalive_interval=kw.pop("keepalive"),
            keepalive_count_max=base.keepalive_count_max,
        )
        return f(**kw)

    opts = [
        click.option("--device", "address", metavar="USER@HOST[:PORT]", help="The device (or 'local')."),
        click.option(
            "--root",
            help="Install folder on the device. deploy: default the bundle's install.root (its target); "
            "status/logs/rollback/releases: default the first of /opt/llmos, ~/llmos holding an install.",
        ),
        click.option("--identity", type=click.Path(path_type=Path), help="SSH private key (default: agent)."),
        click.option(
            "--known-hosts", type=click.Path(path_type=Path), help="known_hosts file to pin keys in."
        ),
        click.option(
            "--accept-host-key", metavar="SHA256:...", help="Accept this (shown) host key fingerprint."
        ),
        click.option("--jump", metavar="USER@HOST[:PORT]", help="Reach the device through this jump host."),
        click.option(
            "--keepalive",
            type=float,
            default=2.0,
            show_default=True,
            help="Seconds between SSH keepalives; a link is dead after 3 missed (raise for slow "
            "or emulated devices).",
        ),
    ]
    decorated: F = wrapper
    for o in reversed(opts):
        decorated = o(decorated)
    return decorated


def _need_device(address: str | None) -> str:
    if not address:
        raise UserError("no device given", hints=["pass --device user@host[:port]"])
    return address


@click.command("deploy")
@click.argument("bundle", type=click.Path(path_type=Path))
@ssh_options
@click.option(
    "--inventory", type=click.Path(path_type=Path), help="Fleet inventory TOML (instead of --device)."
)
@click.option("--key", "pubkey", type=click.Path(path_type=Path), help="Public key that signed the bundle.")
@click.option("--allow-unsigned", is_flag=True, help="Install an unsigned bundle (recorded on the device).")
@click.option("--allow-downgrade", is_flag=True, help="Install an older version (logged).")
@click.option("--retry-failed", is_flag=True, help="Push a version that already failed on the device.")
@click.option("--reinstall", is_flag=True, help="Deploy even if this version is already active.")
@click.option("--target", help="The device's target; refuse bundles for another.")
@click.option(
    "--service",
    type=click.Choice(["systemd", "pidfile"]),
    help="How the runtime is supervised (default: the target's install.service; systemd needs a root "
    "login on a systemd device, pidfile a non-root login).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be sent and changed; change nothing.")
@click.option("--smoke-timeout", type=float, default=120, show_default=True)
@click.option(
    "--smoke-latency-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Slow stand-in for the target (QEMU, a throttled board): first-token limit x N and tokens/s "
    "floor / N. The golden answers are still checked; the device's audit log records N.",
)
@click.option("--device-python", help="Python on the device for the runtime when the bundle has no wheels.")
@click.option("--remote-python", default="python3", show_default=True, help="Python that runs the agent.")
@click.option("--parallel", type=int, default=4, show_default=True, help="Fleet: devices at once.")
@click.option("--max-failures", type=int, default=1, show_default=True, help="Fleet: canary stops after N.")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report here.")
def deploy_cmd(
    bundle: Path,
    address: str | None,
    root: str | None,
    ssh: Any,
    inventory: Path | None,
    pubkey: Path | None,
    allow_unsigned: bool,
    allow_downgrade: bool,
    retry_failed: bool,
    reinstall: bool,
    target: str | None,
    service: str | None,
    dry_run: bool,
    smoke_timeout: float,
    smoke_latency_scale: float,
    device_python: str | None,
    remote_python: str,
    parallel: int,
    max_failures: int,
    report: Path | None,
) -> None:
    """Install BUNDLE on a device (or a fleet), smoke-test it, roll back on failure."""
    from ..deploy.preflight import PreflightOptions
    from ..deploy.run import DeployOptions
    from ..deploy.source import load_bundle

    if bool(address) == bool(inventory):
        raise UserError("give exactly one of --device and --inventory")
    src = load_bundle(bundle, pubkey, allow_unsigned=allow_unsigned)
    opts = DeployOptions(
        root=root,
        service=service,
        remote_python=remote_python,
        device_python=device_python,
        allow_unsigned=allow_unsigned,
        dry_run=dry_run,
        smoke_timeout=smoke_timeout,
        smoke_latency_scale=smoke_latency_scale,
        preflight=PreflightOptions(target, allow_downgrade, retry_failed, reinstall),
    )
    if inventory:
        _fleet(inventory, src, opts, ssh, parallel, max_failures, report)
    else:
        _single(_need_device(address), src, opts, ssh, report)


def _single(address: str, src: Any, opts: Any, ssh: Any, report_path: Path | None) -> None:
    from ..deploy.run import deploy_to, failure_report
    from ..deploy.views import BarEvents, make_progress
    from ..errors import LlmosError

    try:
        with make_progress() as progress:
            rep = asyncio.run(deploy_to(address, src, opts, ssh, BarEvents(progress, address)))
    except LlmosError as exc:
        if report_path:
            report_path.write_text(
                json.dumps(failure_report(address, src.version, exc, 0).to_json(), indent=2)
            )
        raise
    for note in rep.notes:
        click.echo(f"note: {note}")
    click.echo(f"{rep.status}: {rep.message}")
    click.echo(
        f"sent {rep.bytes_sent / 1e6:.2f} MB of {rep.bytes_total / 1e6:.2f} MB "
        f"({rep.files_reused} file(s) already on the device) in {rep.seconds:.1f}s"
    )
    if report_path:
        report_path.write_text(json.dumps(rep.to_json(), indent=2))


def _fleet(
    inventory: Path, src: Any, opts: Any, ssh: Any, parallel: int, max_failures: int, report_path: Path | None
) -> None:
    from ..deploy.fleet import load_inventory, run_fleet
    from ..deploy.views import LiveFleetView, make_progress, summary_rows
    from ..errors import DeviceError
    from ..fsutil import atomic_write_text

    inv = load_inventory(inventory)
    with make_progress() as progress:
        result = asyncio.run(
            run_fleet(
                inv,
                src,
                opts,
                ssh,
                parallel=parallel,
                max_failures=max_failures,
                view=LiveFleetView(progress),
            )
        )
    table(
        f"deploy {src.name} {src.version}",
        ["device", "status", "version", "sent", "time", "message"],
        summary_rows(result.reports),
    )
    if report_path:
        atomic_write_text(report_path, json.dumps(result.to_json(), indent=2))
    if not result.ok:
        stopped = " (canary stopped the rollout)" if result.stopped_by_canary else ""
        raise DeviceError(
            f"{sum(r.status != 'ok' for r in result.reports)} of {len(result.reports)} device(s) "
            f"did not get {src.version}{stopped}",
            hints=["see the table and the JSON report"],
        )


def _call(coro: Any) -> Any:
    return asyncio.run(coro)


@click.command("status")
@ssh_options
@json_option
def status_cmd(
    address: str | None,
    root: str | None,
    ssh: Any,
    as_json: bool,
) -> None:
    """What runs on the device: current/previous release, process, lock, failed releases."""
    from ..deploy import commands
    from ..deploy.run import resolved_note

    st = _call(commands.status(_need_device(address), ssh, root))
    if as_json:
        emit_json(st)
        return
    lock = st.get("lock")
    for note in resolved_note(st.get("resolved")):
        click.echo(f"note: {note}")
    table(
        f"{st.get('hostname')} ({address})",
        ["field", "value"],
        [
            ("current", st.get("current")),  # committed
            ("serving", st.get("serving")),  # what the runtime process answering was started from
            *([("WARNING", st["discrepancy"])] if st.get("discrepancy") else []),
            ("previous", st.get("previous")),
            ("pid", st.get("pid")),
            ("listening", st.get("listening")),
            ("releases", ", ".join(st.get("releases", []))),
            ("failed", ", ".join(st.get("failed", {}))),
            ("lock", lock.get("owner") if lock else "free"),
            *([("busy", st["busy"].get("work"))] if st.get("busy") else []),
        ],
    )


@click.command("rollback")
@ssh_options
@click.option("--to", "to", help="Release to switch to (default: the previous one).")
@click.option("--timeout", type=float, default=120, show_default=True)
def rollback_cmd(
    address: str | None,
    root: str | None,
    ssh: Any,
    to: str | None,
    timeout: float,
) -> None:
    """Switch the device back to its previous release and restart it."""
    from ..deploy import commands
    from ..deploy.run import resolved_note

    res = _call(commands.rollback(_need_device(address), ssh, root, to, timeout))
    for note in resolved_note(res.get("resolved")):
        click.echo(f"note: {note}")
    click.echo(f"active: {res['active']} (was {res['previous']})")


@click.command("logs")
@ssh_options
@click.option("--lines", type=int, default=50, show_default=True)
@json_option
def logs_cmd(
    address: str | None,
    root: str | None,
    ssh: Any,
    lines: int,
    as_json: bool,
) -> None:
    """The runtime's log and the deploy audit trail from the device."""
    from ..deploy import commands

    res = _call(commands.logs(_need_device(address), ssh, root, lines))
    if as_json:
        emit_json(res)
        return
    click.echo(res["log"])
    for ev in res["audit"]:
        click.echo(json.dumps(ev, sort_keys=True))


@click.command("releases")
@ssh_options
@click.option("--keep", type=int, help="Delete all but the newest N releases (current and previous stay).")
@json_option
def releases_cmd(
    address: str | None,
    root: str | None,
    ssh: Any,
    keep: int | None,
    as_json: bool,
) -> None:
    """List the releases on the device; --keep N prunes."""
    from ..deploy import commands

    res = _call(commands.releases(_need_device(address), ssh, root, keep))
    if as_json:
        emit_json(res)
        return
    table(
        "releases",
        ["version", "active/previous"],
        [(r["version"], "yes" if r["current"] else "") for r in res["releases"]],
    )
    if res["removed"]:
        click.echo("removed: " + ", ".join(res["removed"]))
