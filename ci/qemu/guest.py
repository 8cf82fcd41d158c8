"""Boot the aarch64 guest under qemu-system, wait until ssh logs in, run commands, stop it via QMP."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from llmos_edge.errors import DeviceError

from .image import FAST_INIT, GuestImage

SSH_OPTS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class QemuGuest:
    """One running guest; `with QemuGuest(image, workdir) as g:` boots it and always stops it."""

    def __init__(self, image: GuestImage, workdir: Path, *, memory_mb: int = 5120, cpus: int = 2,
                 init: str = "systemd", persistent: bool = False) -> None:
        """init: "systemd" (the real device boot) or "fast" (a minimal PID 1: sshd in seconds).

        memory_mb: 5 GiB so an rpi5 bundle's 4 GiB model budget passes preflight (pages are lazy).
        persistent: write to a qcow2 overlay of the cached disk in workdir (kept across reboot() and
        stop()/start(), like a device's own disk) instead of snapshot=on (every boot starts clean).
        """
        if init not in ("systemd", "fast"):
            raise ValueError(f"init must be 'systemd' or 'fast', not {init!r}")
        self.init = init
        self.image = image
        self.workdir = workdir
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.host = "127.0.0.1"
        self.port = 0
        self.user = image.user
        self.known_hosts = workdir / "known_hosts"
        self.boot_seconds = 0.0
        self.persistent = persistent

    # -- lifecycle --------------------------------------------------------------------------------
    def command(self) -> list[str]:
        w = self.workdir
        return [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", str(self.cpus),
            "-m", str(self.memory_mb), "-display", "none", "-monitor", "none",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", self.kernel_args(), "-no-reboot",
            "-drive", self._drive(),
            "-device", "virtio-blk-pci,drive=d0",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-device", "virtio-rng-pci",
            "-serial", f"file:{w / 'serial.log'}", "-qmp", f"unix:{w / 'qmp.sock'},server=on,wait=off",
            "-pidfile", str(w / "qemu.pid"), "-daemonize",
        ]

    def _drive(self) -> str:
        if not self.persistent:
            return f"file={self.image.disk},if=none,id=d0,format=raw,snapshot=on"
        return f"file={self.workdir / 'disk.qcow2'},if=none,id=d0,format=qcow2"

    def _overlay(self) -> None:
        """This guest's own writable disk: a qcow2 whose backing file is the cached (read-only) image."""
        disk = self.workdir / "disk.qcow2"
        if self.persistent and not disk.exists():
            cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.disk),
                   str(disk)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise DeviceError(f"qemu-img create failed: {proc.stderr[-800:]}",
                                  hints=["apt-get install -y qemu-utils"])

    def kernel_args(self) -> str:
        args = "console=ttyAMA0 panic=-1 quiet"
        return args + (f" init={FAST_INIT}" if self.init == "fast" else "")

    def start(self, timeout: float = 600) -> None:
        """Boot (snapshot=on: the cached disk is never written) and wait for a working ssh login."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._overlay()
        self.known_hosts.write_text(self.known_hosts_line())
        t0 = time.monotonic()
        self.port = free_port()
        proc = subprocess.run(self.command(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DeviceError(f"qemu-system-aarch64 did not start: {proc.stderr[-1500:]}",
                              hints=["apt-get install -y qemu-system-arm", "check free memory"])
        try:
            self.wait_ssh(timeout)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0

    def known_hosts_line(self) -> str:
        """Pinned host keys for [127.0.0.1]:port (the port is chosen at start)."""
        return "".join(f"[{self.host}]:{self.port} {key}\n" for key in self.image.host_keys)

    def wait_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.known_hosts.write_text(self.known_hosts_line())
        while time.monotonic() < deadline:
            if not self.alive():
                raise DeviceError("the QEMU guest exited during boot", hints=[self._serial_tail()])
            if self._banner() and self.ssh(["true"], check=False, timeout=30).returncode == 0:
                return
            time.sleep(1)
        raise DeviceError(f"guest ssh not ready after {timeout:.0f} s", hints=[self._serial_tail()])

    def _banner(self) -> bool:
        """QEMU accepts on the forwarded port at once; only a real sshd sends an SSH- banner."""
        try:
            with socket.create_connection((self.host, self.port), timeout=3) as s:
                s.settimeout(3)
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def pid(self) -> int | None:
        try:
            return int((self.workdir / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 15) -> None:
        """QMP quit (about 2 s); SIGKILL of our own pid if QMP does not answer."""
        with contextlib.suppress(OSError, ValueError):
            self._qmp("quit")
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = self.pid()
        if pid is not None and self.alive():
            os.kill(pid, signal.SIGKILL)

    def reboot(self, timeout: float = 1200) -> None:
        """A real reboot from inside: `systemctl reboot` as root (units stop, disks sync); QEMU runs
        with -no-reboot, so it exits at the reset and is started again on the same overlay disk."""
        if not self.persistent:
            raise ValueError("reboot() needs persistent=True: with snapshot=on the disk state is lost")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ssh(["systemctl", "reboot"], user="root", check=False, timeout=60)
        deadline = time.monotonic() + 600
        while self.alive() and time.monotonic() < deadline:
            time.sleep(1)
        if self.alive():
            raise DeviceError("the guest did not go down within 600 s of `systemctl reboot`",
                              hints=[self._serial_tail()])
        self.start(timeout)

    def _qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.workdir / "qmp.sock"))
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                f.readline()

    def _serial_tail(self) -> str:
        try:
            text = (self.workdir / "serial.log").read_text(errors="replace")
            return "serial console tail:\n" + text[-1500:]
        except OSError:
            return "no serial log"

    # -- use --------------------------------------------------------------------------------------
    def ssh_base(self, user: str | None = None, known_hosts: Path | None = None) -> list[str]:
        kh = known_hosts or self.known_hosts
        return ["ssh", *SSH_OPTS, "-o", f"UserKnownHostsFile={kh}", "-i",
                str(self.image.client_key), "-p", str(self.port), f"{user or self.user}@{self.host}"]

    def ssh(self, cmd: Sequence[str], *, user: str | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run argv on the guest. Arguments are shell-quoted for the remote shell, never interpolated."""
        remote = " ".join(shlex.quote(c) for c in cmd)
        proc = subprocess.run([*self.ssh_base(user), remote], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise DeviceError(f"guest command {cmd[0]} failed (exit {proc.returncode}): "
                              f"{proc.stderr[-1000:]}")
        return proc

    def copy_key(self, dest: Path) -> Path:
        """A copy of the CI client key with 0600 (ssh refuses keys other users can read)."""
        shutil.copy(self.image.client_key, dest)
        dest.chmod(0o600)
        return dest

    def __enter__(self) -> QemuGuest:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
