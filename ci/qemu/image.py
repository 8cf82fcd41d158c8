"""The bootable guest: rootfs + kernel modules as an ext4 disk, with the kernel and initrd beside it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .cache import Timings, cached_entry
from .kernel import Kernel, build_kernel
from .rootfs import DEVICE_USER, Rootfs, build_rootfs
from .tools import require_tools, run

DISK_SIZE = "4G"  # sparse; room for a bundle, its venv and two releases
FAST_INIT = "/usr/local/sbin/llmos-fast-init"
INSTALL_ROOT = "/opt/llmos"  # the rpi targets' install.root, provisioned for the device user
# PID 1 for quick CI boots (kernel arg init=FAST_INIT): mounts, network, sshd, and zombie reaping.
# Under a loaded TCG host systemd needs minutes to reach sshd; a non-root deploy never uses systemd.
_FAST_INIT = """#!/usr/bin/python3 -S
import os, subprocess, time
def sh(*cmd):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
sh("mount", "-o", "remount,rw", "/")
for fs, path in (("proc", "/proc"), ("sysfs", "/sys"), ("tmpfs", "/run"), ("devpts", "/dev/pts")):
    os.makedirs(path, exist_ok=True)
    sh("mount", "-t", fs, fs, path)
os.makedirs("/run/sshd", exist_ok=True)
sh("hostname", "-F", "/etc/hostname")
for mod in ("virtio_net", "virtio_rng"):
    sh("modprobe", mod)
sh("ip", "link", "set", "lo", "up")
sh("ip", "link", "set", "eth0", "up")
sh("ip", "addr", "add", "10.0.2.15/24", "dev", "eth0")
sh("ip", "route", "add", "default", "via", "10.0.2.2")
subprocess.run(["/usr/sbin/sshd", "-E", "/var/log/sshd.log"])
with open("/dev/console", "w") as con:
    print("llmos-fast-init: sshd started", file=con)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
"""


@dataclass(frozen=True)
class GuestImage:
    """Everything needed to boot a guest and log into it."""

    disk: Path
    kernel: Path
    initrd: Path
    client_key: Path
    host_keys: tuple[str, ...]
    user: str = DEVICE_USER


def image_cached() -> bool:
    """Whether the slow steps (rootfs, kernel) are cached; the disk is rebuilt from them in seconds."""
    from .cache import is_cached
    from .kernel import kernel_inputs
    from .rootfs import rootfs_inputs

    return is_cached("rootfs", rootfs_inputs()) and is_cached("kernel", kernel_inputs())


def build_image(timings: Timings | None = None, refresh: bool = False) -> GuestImage:
    """rootfs -> kernel/initrd -> disk, each step cached on its inputs (seconds when all are cached)."""
    require_tools()
    rootfs = build_rootfs(timings, refresh)
    kernel = build_kernel(timings, refresh)
    entry = cached_entry("disk", {"rootfs": rootfs.entry.name, "kernel": kernel.entry.name,
                                  "size": DISK_SIZE, "fast_init": _FAST_INIT,
                                  "install_root": INSTALL_ROOT},
                         lambda tmp: _make_disk(rootfs, kernel, tmp),
                         timings, refresh)
    return GuestImage(entry / "disk.img", kernel.vmlinuz, kernel.initrd, rootfs.client_key,
                      tuple(rootfs.host_keys()))


def _make_disk(rootfs: Rootfs, kernel: Kernel, tmp: Path) -> None:
    """mkfs.ext4 -d from a hardlinked copy of the rootfs plus the kernel's modules (never edits the cache)."""
    tree = tmp / "tree"
    run(["cp", "-al", rootfs.path, tree], what="hardlink copy of the rootfs")
    mods = tree / "lib/modules" / kernel.modules.name
    mods.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(kernel.modules, mods, symlinks=True)
    _provision_install_root(tree)
    init = tree / FAST_INIT.lstrip("/")
    init.parent.mkdir(parents=True, exist_ok=True)
    init.unlink(missing_ok=True)  # never write through a hardlink into the cached rootfs
    init.write_text(_FAST_INIT)
    init.chmod(0o755)
    run(["mkfs.ext4", "-q", "-F", "-L", "llmos-root", "-d", tree, tmp / "disk.img", DISK_SIZE],
        timeout=900, what="mkfs.ext4 -d")
    shutil.rmtree(tree)


def _provision_install_root(tree: Path) -> None:
    """As a device image would: the install root exists and belongs to the (non-root) device user."""
    import os

    ids = {f[0]: (int(f[2]), int(f[3])) for f in
           (line.split(":") for line in (tree / "etc/passwd").read_text().splitlines()) if len(f) > 3}
    root = tree / INSTALL_ROOT.lstrip("/")
    root.mkdir(parents=True, exist_ok=True)
    os.chown(root, *ids[DEVICE_USER])
