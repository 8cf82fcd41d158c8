"""Running host tools with clear errors, and checking that the emulation tools are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmos_edge.errors import DeviceError, UserError

APT_PACKAGES = (
    "qemu-user-static qemu-system-arm debootstrap binfmt-support qemu-utils busybox-static e2fsprogs "
    "openssh-client kmod"
)
_TOOLS = {
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-aarch64-static": "qemu-user-static",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "apt-get": "apt",
}


def missing_tools() -> list[str]:
    """Names of the host tools the QEMU tiers need that are not on PATH (with their apt package)."""
    return [f"{tool} (apt {pkg})" for tool, pkg in _TOOLS.items() if shutil.which(tool) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise UserError(
            "the QEMU device tools are missing: " + ", ".join(missing),
            hints=[f"apt-get install -y {APT_PACKAGES}"],
        )
    if os.geteuid() != 0:
        raise UserError(
            "building the guest image needs root (debootstrap, chroot)",
            hints=["run as root, e.g. in the CI container", "or reuse a cached image (LLMOS_EDGE_CACHE)"],
        )


def run(
    cmd: Sequence[str | Path],
    *,
    timeout: float = 1800,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    what: str = "",
) -> str:
    """Run a command without a shell; on failure raise DeviceError with the tail of its output."""
    args = [str(c) for c in cmd]
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=dict(env) if env else None, cwd=cwd
        )
    except FileNotFoundError as exc:
        raise UserError(f"{args[0]} is not installed", hints=[f"apt-get install -y {APT_PACKAGES}"]) from exc
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"{what or args[0]} took longer than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise DeviceError(
            f"{what or ' '.join(args[:3])} failed (exit {proc.returncode}):\n{tail}",
            hints=["re-run with a fresh cache entry (--refresh) if a previous build was interrupted"],
        )
    return proc.stdout


def ensure_binfmt() -> None:
    """Make the host run arm64 binaries through qemu-user (needed for chroot into the rootfs)."""
    mnt = Path("/proc/sys/fs/binfmt_misc")
    if not (mnt / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(mnt)], what="mount binfmt_misc")
    entry = mnt / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        run(["update-binfmts", "--enable", "qemu-aarch64"], what="update-binfmts --enable qemu-aarch64")
    if "enabled" not in entry.read_text():
        raise UserError(
            "arm64 binaries cannot run on this host (binfmt qemu-aarch64 is not enabled)",
            hints=["apt-get install -y qemu-user-static binfmt-support", "run in a privileged container"],
        )
