"""Quick tier: the bundle's runtime under qemu-user in a throwaway copy of the arm64 rootfs.

No kernel, no VM: `chroot` + binfmt runs aarch64 python3 directly (onnxruntime imports in ~4 s).
/sys is never mounted (onnxruntime segfaults under qemu-user with it) and the process starts from
`env -i`, so the host's PIP_* / PYTHON* variables cannot leak into the device environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from llmos_edge.errors import UserError

from .cache import Timings, cached_entry
from .rootfs import Rootfs
from .tools import ensure_binfmt, run

SITE = "/opt/site"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIP_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64")


def build_site(wheels: Path, timings: Timings | None = None, python: str = "3.11") -> Path:
    """Install aarch64 wheels into a site dir on the host (~15 s) instead of pip under emulation."""
    names = sorted(p.name for p in wheels.glob("*.whl"))
    if not names:
        raise UserError(f"no .whl files in {wheels}", hints=["build the bundle with wheels, or fetch them"])

    def build(tmp: Path) -> None:
        cmd: list[str | Path] = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                                 "--no-index", "--no-deps", "--only-binary=:all:", "--target", tmp / "site",
                                 "--python-version", python, "--implementation", "cp"]
        for plat in PIP_PLATFORMS:
            cmd += ["--platform", plat]
        run([*cmd, *(wheels / n for n in names)], timeout=900, what="pip install --target (aarch64)")

    return cached_entry("site", {"wheels": names, "python": python}, build, timings) / "site"


class ChrootDevice:
    """A throwaway hardlinked copy of the rootfs with /proc mounted; removed (after umount) on exit."""

    def __init__(self, rootfs: Rootfs, workdir: Path, site: Path | None = None) -> None:
        self.rootfs = rootfs
        self.root = workdir / "root"
        self.site = site
        self._proc_mounted = False

    def __enter__(self) -> ChrootDevice:
        ensure_binfmt()
        run(["cp", "-al", self.rootfs.path, self.root], what="hardlink copy of the rootfs")
        if self.site is not None:
            run(["cp", "-al", self.site, self.root / SITE.lstrip("/")], what="hardlink copy of site")
        run(["mount", "-t", "proc", "proc", self.root / "proc"], what="mount /proc in the chroot")
        self._proc_mounted = True
        return self

    def put(self, src: Path, dest: str) -> Path:
        """Copy a host folder into the device (fresh files: never hardlinked into the cache)."""
        target = self.root / dest.lstrip("/")
        shutil.copytree(src, target)
        return target

    def argv(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        base = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        if self.site is not None:
            base["PYTHONPATH"] = SITE
        merged = {**base, **(env or {})}
        assignments = [f"{k}={v}" for k, v in merged.items()]
        return ["chroot", str(self.root), "/usr/bin/env", "-i", *assignments, *cmd]

    def popen(self, cmd: Sequence[str], env: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        return subprocess.Popen(self.argv(cmd, env), stdout=out, stderr=subprocess.STDOUT)

    def run(self, cmd: Sequence[str], env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(cmd, env), capture_output=True, text=True, timeout=timeout)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc_mounted:
            run(["umount", "-l", self.root / "proc"], what="umount /proc in the chroot")
        # Never delete through a mount point (a leftover bind could reach host files).
        if not any(os.path.ismount(p) for p in (self.root / "proc", self.root / "dev", self.root / "sys")):
            shutil.rmtree(self.root, ignore_errors=True)
