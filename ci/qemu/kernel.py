"""Debian's arm64 kernel and a tiny busybox initrd that loads virtio + ext4 and switches to /dev/vda.

The .debs come from a private arm64 apt state, so the host's apt configuration is never touched.
"""

from __future__ import annotations

import lzma
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cache import Timings, cached_entry
from .cpio import write_newc_gz
from .rootfs import MIRROR, SUITE
from .tools import run

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
INITRD_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")

_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
init=/sbin/init
for arg in $(cat /proc/cmdline); do case "$arg" in init=*) init="${arg#init=}";; esac; done
for m in $(cat /modules.order); do insmod "/lib/modules/$m" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "llmos-initrd: cannot mount /dev/vda"; exec sh; }
umount /sys /proc
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
"""


@dataclass(frozen=True)
class Kernel:
    entry: Path

    @property
    def vmlinuz(self) -> Path:
        return self.entry / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.entry / "initrd.gz"

    @property
    def modules(self) -> Path:
        """lib/modules/<version> of this kernel, copied into the guest disk."""
        return next((self.entry / "modules").iterdir())


class Arm64Apt:
    """apt-get for arm64 packages in a private state dir (lists, cache, sources of its own)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        for sub in ("lists/partial", "cache/archives/partial", "etc"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "status").touch()
        line = f"deb [arch=arm64 signed-by={KEYRING}] {MIRROR} {SUITE} main\n"
        (state / "etc/sources.list").write_text(line)

    def _opts(self) -> list[str]:
        s = self.state
        return ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
                "-o", f"Dir::Etc::sourcelist={s}/etc/sources.list", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={s}/lists", "-o", f"Dir::State::status={s}/status",
                "-o", f"Dir::Cache={s}/cache", "-o", "Debug::NoLocking=1"]

    def update(self) -> None:
        run(["apt-get", *self._opts(), "update"], timeout=600, what="apt-get update (arm64 lists)")

    def kernel_package(self, meta: str = "linux-image-arm64") -> str:
        """The versioned kernel package the metapackage points at today (e.g. linux-image-6.1.0-41-arm64)."""
        out = run(["apt-cache", *self._opts(), "depends", meta], what=f"apt-cache depends {meta}")
        found = re.findall(r"Depends: (linux-image-[0-9][^\s:]*)", out)
        if not found:
            raise RuntimeError(f"no versioned kernel package behind {meta}:\n{out}")
        return found[0]

    def download(self, package: str, dest: Path) -> Path:
        run(["apt-get", *self._opts(), "download", f"{package}:arm64"], cwd=dest, timeout=900,
            what=f"apt-get download {package}")
        return next(dest.glob(f"{package}_*_arm64.deb"))


def kernel_inputs() -> dict[str, object]:
    return {"suite": SUITE, "mirror": MIRROR, "meta": "linux-image-arm64", "modules": INITRD_MODULES,
            "init": _INIT}


def build_kernel(timings: Timings | None = None, refresh: bool = False) -> Kernel:
    """Fetch and unpack the kernel and busybox-static:arm64, then build the initrd; cached."""
    def build(tmp: Path) -> None:
        work = tmp / "work"
        apt = Arm64Apt(work / "apt")
        apt.update()
        pkg = apt.kernel_package()
        for name in (pkg, "busybox-static"):
            run(["dpkg-deb", "-x", apt.download(name, work), work / "x"], what=f"dpkg-deb -x {name}")
        x = work / "x"
        shutil.copy(next((x / "boot").glob("vmlinuz-*")), tmp / "vmlinuz")
        moddir = next((x / "lib/modules").iterdir())
        # Debian generates modules.dep in the package's postinst; do it here (depmod reads any arch).
        run(["depmod", "-b", x, moddir.name], what="depmod for the arm64 kernel")
        shutil.copytree(moddir, tmp / "modules" / moddir.name, symlinks=True)
        (tmp / "kernel-package.txt").write_text(f"{pkg}\n{moddir.name}\n")
        _build_initrd(x / "bin/busybox", moddir, tmp / "initrd.gz")
        shutil.rmtree(work)

    return Kernel(cached_entry("kernel", kernel_inputs(), build, timings, refresh))


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Relative .ko paths for `wanted` and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", Path(m).name).replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        for d in reversed(deps.get(mod, [])):
            visit(d)
        if mod not in order:
            order.append(mod)

    for name in wanted:
        if name in by_name:  # absent = built into the kernel
            visit(by_name[name])
    return order


def _build_initrd(busybox: Path, moddir: Path, out: Path) -> None:
    files: dict[str, tuple[bytes, int]] = {
        "init": (_INIT.encode(), 0o755),
        "bin/busybox": (busybox.read_bytes(), 0o755),
    }
    names = []
    for rel in _module_order(moddir, INITRD_MODULES):
        data = (moddir / rel).read_bytes()
        if rel.endswith(".xz"):
            data, rel = lzma.decompress(data), rel[:-3]
        files[f"lib/modules/{rel}"] = (data, 0o644)
        names.append(rel)
    files["modules.order"] = ("\n".join(names).encode() + b"\n", 0o644)
    write_newc_gz(files, out)
