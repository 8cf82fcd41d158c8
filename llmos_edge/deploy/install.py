"""Where and how a bundle installs: its target's `install.*`, read from the signed bundle, flags on top.

The bundle's own systemd unit (signed, hash-checked like every file) names the install root
(`ExecStart=<root>/current/bin/llmos-launch`) and the service user (`User=`); those are the values the
device's systemd will use, so they win over any host-side guess. The service mode comes from the
target profile the manifest names (`install.service`). `--root` and `--service` override, but never
into a state where the installed unit and the install root disagree: that is refused at preflight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UserError
from .source import BundleSource

ServiceMode = Literal["systemd", "pidfile"]
FALLBACK_ROOT = "~/llmos"  # a bundle with neither a unit nor a known target (hand-made test bundles)
UNIT = "systemd/llmos-edge.service"
_EXEC = re.compile(r"^ExecStart=(.*)$", re.M)
_LAUNCH = "/current/bin/llmos-launch"
_USER = re.compile(r"^User=(\S+)\s*$", re.M)


@dataclass(frozen=True)
class InstallSettings:
    """root: as given to the agent (`~` expands on the device); unit_root: what the unit starts."""

    root: str
    service: ServiceMode
    user: str | None
    unit_root: str | None
    root_from: str  # where root came from, for messages: "--root", "the bundle's unit", ...
    service_from: str


def unit_settings(bundle: BundleSource) -> tuple[str | None, str | None]:
    """(root, user) as the bundle's signed unit states them; `%h/x` reads as `~/x`."""
    if UNIT not in bundle.files:
        return None, None
    try:
        text = (bundle.folder / UNIT).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, None
    exe, user = _EXEC.search(text), _USER.search(text)
    start = exe.group(1).strip() if exe else ""
    root = start[: -len(_LAUNCH)] if start.endswith(_LAUNCH) else start
    if root == "%h" or root.startswith("%h/"):
        root = "~" + root[2:]
    if not _plain_root(root):
        raise UserError(
            f"the bundle's {UNIT} starts {start!r}, not <install root>{_LAUNCH} with a plain install "
            "root (an absolute or ~/ path without '..', '%' specifiers or odd characters)",
            hints=["rebuild the bundle from a target whose install.root is a plain path"],
        )
    return root, (user.group(1) if user else None)


def _plain_root(root: str) -> bool:
    parts = root.split("/")
    return (root.startswith(("/", "~/")) and re.fullmatch(r"[A-Za-z0-9._~/+-]+", root) is not None
            and not any(p in (".", "..") for p in parts[1:]))


def _target_install(bundle: BundleSource) -> tuple[str | None, str | None]:
    """(root, service) of the target profile the manifest names, when this host knows it."""
    if not bundle.target:
        return None, None
    from ..spec import load_target

    try:
        inst = load_target(bundle.target).install
    except UserError:
        return None, None
    return inst.root, inst.service


def resolve(bundle: BundleSource, root: str | None, service: str | None) -> InstallSettings:
    """Flags first, then the bundle's unit, then its target profile, then FALLBACK_ROOT."""
    unit_root, user = unit_settings(bundle)
    target_root, target_service = _target_install(bundle)
    if root:
        chosen, root_from = root, "--root"
    elif unit_root:
        chosen, root_from = unit_root, f"the bundle's unit ({UNIT})"
    elif target_root:
        chosen, root_from = target_root, f"target {bundle.target}'s install.root"
    else:
        chosen, root_from = FALLBACK_ROOT, "the default"
    if service:
        mode, service_from = _mode(service), "--service"
    else:
        mode = "systemd" if (target_service or "systemd") == "systemd" else "pidfile"
        service_from = f"target {bundle.target}'s install.service" if target_service else "the default"
    return InstallSettings(chosen, mode, user, unit_root, root_from, service_from)


def _mode(value: str) -> ServiceMode:
    if value not in ("systemd", "pidfile"):
        raise UserError(f"--service must be systemd or pidfile, not {value!r}")
    return "systemd" if value == "systemd" else "pidfile"


def device_mode(probe: dict[str, Any]) -> ServiceMode:
    """What the agent will do: systemd units for a root login on a systemd device, else pidfiles."""
    return "systemd" if probe.get("systemd") and probe.get("uid") == 0 else "pidfile"


def _same_root(a: str, b: str, home: str | None) -> bool:
    def norm(p: str) -> str:
        if home and (p == "~" or p.startswith("~/")):
            p = home + p[1:]
        return p.rstrip("/") or "/"

    return norm(a) == norm(b)


def check_writable(device: str, inst: InstallSettings, answer: str) -> None:
    """Refuse a root the login cannot create or write; `answer` is what _WRITABLE printed."""
    ok, _, where = answer.strip().partition(" ")
    if ok == "1":
        return
    raise UserError(
        f"{device}: this login cannot write the install root {where or inst.root} (from {inst.root_from})",
        hints=[
            "log in as root: the bundle's unit runs the service as "
            f"{inst.user or 'its service user'}, not as the login",
            f"or let root create it for this login: install -d -o <login user> {where or inst.root}",
            "or pass --root ~/llmos --service pidfile (no unit is installed; the runtime runs "
            "under pidfile supervision)",
        ],
    )


def check_install(probe: dict[str, Any], inst: InstallSettings) -> list[str]:
    """Refuse every combination in which the unit and the install would disagree; notes otherwise."""
    host = probe.get("hostname") or "the device"
    have = device_mode(probe)
    if inst.service == "systemd" and have == "pidfile":
        why = "the device has no systemd" if not probe.get("systemd") else "the login is not root"
        if inst.service_from == "--service":
            raise UserError(
                f"{host}: --service systemd, but {why}",
                hints=["deploy as root@ to a device running systemd", "or pass --service pidfile"],
            )
        return [f"no systemd unit installed ({why}): the runtime runs under pidfile supervision"]
    if inst.service == "pidfile" and have == "systemd":
        raise UserError(
            f"{host}: the service mode is pidfile (from {inst.service_from}), but a root login on a "
            "systemd device installs the bundle's unit",
            hints=["deploy as a non-root user for pidfile supervision",
                   "or pass --service systemd to run it under the bundle's unit"],
        )
    if have == "systemd":
        _check_unit_root(probe, inst)
    return []


def _check_unit_root(probe: dict[str, Any], inst: InstallSettings) -> None:
    host = probe.get("hostname") or "the device"
    if inst.unit_root is None:
        raise UserError(f"{host}: the bundle has no {UNIT} to run it under systemd",
                        hints=["deploy as a non-root user (pidfile supervision)",
                               "or build it for a target with install.service = \"systemd\""])
    if inst.unit_root.startswith("~"):
        raise UserError(
            f"{host}: the bundle's unit starts {inst.unit_root}/current (relative to the service "
            "user's home), which a root deploy cannot match",
            hints=["build for a target whose install.root is an absolute path",
                   "or deploy as a non-root user (pidfile supervision)"],
        )
    if not _same_root(inst.unit_root, str(probe.get("root")), None):
        raise UserError(
            f"{host}: --root {inst.root} would install where the bundle's systemd unit does not look "
            f"(it starts {inst.unit_root}/current/bin/llmos-launch)",
            hints=[f"drop --root (the bundle installs under {inst.unit_root})",
                   "or build the bundle for a target whose install.root is that folder"],
        )


# Run on the device by the login before the agent touches the root: can it create/write the install
# root (its nearest existing ancestor must be a writable folder)? Read-only; prints "1|0 <abs root>".
_WRITABLE = (
    "import os,sys\n"
    "r=p=os.path.abspath(os.path.expanduser(sys.argv[1]))\n"
    "while not os.path.lexists(p): p=os.path.dirname(p)\n"
    "print(1 if os.path.isdir(p) and os.access(p, os.W_OK | os.X_OK) else 0, r)\n"
)


def writable_argv(python: str, root: str) -> list[str]:
    return [python, "-c", _WRITABLE, root]


# Where `status`, `logs`, `rollback` and `releases` look without --root: every shipped target's
# install.root (a guard test keeps this list complete), the first that holds an install wins.
DEVICE_ROOTS = ("/opt/llmos", "~/llmos")
_FIND = (
    "import os,sys\n"
    "hit=[r for r in sys.argv[1:] if os.path.isdir(os.path.join(os.path.expanduser(r),'state'))]\n"
    "print((hit or sys.argv[1:])[0])\n"
)


def find_root_argv(python: str) -> list[str]:
    return [python, "-c", _FIND, *DEVICE_ROOTS]
