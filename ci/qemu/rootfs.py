"""The arm64 Debian root filesystem (debootstrap) set up as a headless device with sshd."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .cache import Timings, cached_entry
from .tools import ensure_binfmt, run

SUITE = "bookworm"
MIRROR = os.environ.get("LLMOS_EDGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv", "openssh-server", "iproute2", "kmod", "systemd-sysv", "udev")
DEVICE_USER = "pi"  # a non-root login like Raspberry Pi OS; root logs in with the same key
HOSTNAME = "llmos-qemu"

_NETWORK = """[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
"""
_SSHD = """PasswordAuthentication no
PermitRootLogin prohibit-password
UseDNS no
ClientAliveInterval 5
ClientAliveCountMax 6
"""


@dataclass(frozen=True)
class Rootfs:
    """A cached rootfs and the CI key pair that logs into it."""

    entry: Path

    @property
    def path(self) -> Path:
        return self.entry / "rootfs"

    @property
    def client_key(self) -> Path:
        return self.entry / "keys" / "id_ed25519"

    def host_keys(self) -> list[str]:
        """`TYPE AAAA...` of each of the guest's sshd keys: pinned instead of trusted on first use."""
        keys = []
        for pub in sorted((self.path / "etc/ssh").glob("ssh_host_*_key.pub")):
            kind, blob = pub.read_text().split()[:2]
            keys.append(f"{kind} {blob}")
        return keys


def rootfs_inputs() -> dict[str, object]:
    return {"suite": SUITE, "mirror": MIRROR, "arch": "arm64", "variant": "minbase", "packages": PACKAGES,
            "user": DEVICE_USER, "network": _NETWORK, "sshd": _SSHD}


def build_rootfs(timings: Timings | None = None, refresh: bool = False) -> Rootfs:
    """debootstrap (~9 min fresh under qemu-user) then device configuration; cached."""
    def build(tmp: Path) -> None:
        ensure_binfmt()
        root = tmp / "rootfs"
        run(["debootstrap", "--arch=arm64", "--variant=minbase", "--include=" + ",".join(PACKAGES),
             SUITE, root, MIRROR], timeout=3600, what="debootstrap")
        _configure(root, tmp / "keys")

    return Rootfs(cached_entry("rootfs", rootfs_inputs(), build, timings, refresh))


def _chroot(root: Path, *cmd: str) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    return run(["chroot", root, *cmd], env=env, timeout=600, what=f"chroot {' '.join(cmd[:2])}")


def _configure(root: Path, keys: Path) -> None:
    """Hostname, static network on QEMU's user net, sshd drop-in, users with the CI key."""
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    (root / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
    (root / "etc/systemd/network/10-qemu.network").write_text(_NETWORK)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/llmos-ci.conf").write_text(_SSHD)
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,relatime 0 1\n")
    (root / "etc/modules-load.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/modules-load.d/virtio.conf").write_text("virtio_net\nvirtio_rng\n")
    _chroot(root, "systemctl", "enable", "systemd-networkd", "ssh")
    _chroot(root, "useradd", "-m", "-s", "/bin/bash", DEVICE_USER)
    for user in ("root", DEVICE_USER):
        _chroot(root, "usermod", "-p", "*", user)  # no password, but not locked: key login works
    keys.mkdir(parents=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmos-ci", "-f", keys / "id_ed25519"])
    pub = (keys / "id_ed25519.pub").read_text()
    for home, owner in (("root", "root"), (f"home/{DEVICE_USER}", DEVICE_USER)):
        ssh_dir = root / home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(pub)
        (ssh_dir / "authorized_keys").chmod(0o600)
        _chroot(root, "chown", "-R", f"{owner}:{owner}", f"/{home}/.ssh")
    # A minbase image keeps apt caches; the device has no use for them.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / sub).glob("*.deb"):
            p.unlink()
