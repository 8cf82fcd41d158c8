"""Real test devices: a private OpenSSH sshd per test, logging in as the non-root user llmos-dev.

Not a mock: the deploy code talks SSH/SFTP to a real sshd and runs the agent as a real user.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llmos_edge.transports.ssh import SshOptions

DEV_USER = "llmos-dev"
SSHD = "/usr/sbin/sshd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ensure_user() -> pwd.struct_passwd:
    """Create the device login once (locked password, key login only)."""
    with open("/tmp/llmos-dev-user.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(DEV_USER)
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", DEV_USER], check=True)
            subprocess.run(["usermod", "-p", "*", DEV_USER], check=True)
            return pwd.getpwnam(DEV_USER)


def make_client_key(folder: Path) -> tuple[Path, str]:
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, (folder / "id_ed25519.pub").read_text()


def write_sshd_config(
    tmp: Path, port: int, listen: str, authorized: Path, fault_file: Path | None = None
) -> Path:
    host_key = tmp / "host_ed25519"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    cfg = tmp / "sshd_config"
    cfg.write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {listen}",
                f"HostKey {host_key}",
                f"PidFile {tmp}/sshd.pid",
                f"AuthorizedKeysFile {authorized}",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "Subsystem sftp internal-sftp",
                f"AllowUsers {DEV_USER}",
                "ClientAliveInterval 1",
                "ClientAliveCountMax 3",
                "MaxSessions 64",
                "MaxStartups 64",
                "LogLevel ERROR",
                # tests only: the agent SIGKILLs itself at the points this file names (agent.fault_point)
                *([f"SetEnv LLMOS_AGENT_FAULT_FILE={fault_file}"] if fault_file else []),
                "",
            ]
        )
    )
    os.makedirs("/run/sshd", exist_ok=True)
    subprocess.run([SSHD, "-t", "-f", str(cfg)], check=True)
    return cfg


def wait_banner(host: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1) as s:
            if s.recv(4).startswith(b"SSH-"):
                return
        time.sleep(0.03)
    raise RuntimeError(f"sshd on {host}:{port} did not come up")


@dataclass
class Device:
    """One device: sshd + an install root owned by the device user."""

    host: str
    port: int
    root: str
    home: Path  # world-readable folder owned by the device user; root lives inside
    tmp: Path
    identity: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes]
    runtime_port: int

    @property
    def address(self) -> str:
        return f"{DEV_USER}@{self.host}:{self.port}"

    def options(self, **kw: object) -> SshOptions:
        return SshOptions(known_hosts=self.known_hosts, identity=self.identity, **kw)  # type: ignore[arg-type]

    def host_key_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        kind, blob = (self.tmp / "host_ed25519.pub").read_text().split()[:2]
        return f"{name} {kind} {blob}\n"

    def pin(self) -> None:
        self.known_hosts.write_text(self.host_key_line())

    def snapshot(self) -> dict[str, tuple[str, int]]:
        """Every path under the device folder with its content hash (or link target) and mode."""
        import hashlib

        out: dict[str, tuple[str, int]] = {}
        for dirpath, dirnames, filenames in os.walk(self.home):
            for name in [*dirnames, *filenames]:
                p = Path(dirpath) / name
                st = p.lstat()
                if p.is_symlink():
                    out[str(p.relative_to(self.home))] = ("->" + os.readlink(p), st.st_mode)
                elif p.is_file():
                    out[str(p.relative_to(self.home))] = (
                        hashlib.sha256(p.read_bytes()).hexdigest(),
                        st.st_mode,
                    )
                else:
                    out[str(p.relative_to(self.home)) + "/"] = ("dir", st.st_mode)
        return out

    def state(self, name: str) -> Path:
        return Path(self.root) / "state" / name

    def current(self) -> str | None:
        with contextlib.suppress(OSError):
            return os.path.basename(os.readlink(Path(self.root) / "current"))
        return None

    def serving(self, timeout: float = 5) -> str | None:
        """The tag the runtime on the device answers with, or None when nothing serves."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.runtime_port}/", timeout=2) as r:
                    return str(json.loads(r.read())["tag"])
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.1)

    def faults(self, *points: str) -> None:
        """Make the device's agent kill itself (SIGKILL) at these points; none clears them."""
        path = self.home / "faults"
        path.write_text(" ".join(points))
        path.chmod(0o644)

    def stop_runtime(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(self.state("service.pid").read_text())["pid"])
            os.killpg(pid, signal.SIGKILL)

    def stop(self) -> None:
        self.stop_runtime()
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
        shutil.rmtree(self.home, ignore_errors=True)


def start_device(tmp: Path, identity: Path, authorized: Path, runtime_port: int | None = None) -> Device:
    user = ensure_user()
    home = Path(tempfile.mkdtemp(prefix="llmos-dev-home-", dir="/tmp"))
    os.chown(home, user.pw_uid, user.pw_gid)
    os.chmod(home, 0o755)
    port = free_port()
    cfg = write_sshd_config(tmp, port, "127.0.0.1", authorized, home / "faults")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        wait_banner("127.0.0.1", port)
    except RuntimeError:
        proc.kill()
        raise
    dev = Device(
        "127.0.0.1",
        port,
        str(home / "llmos"),
        home,
        tmp,
        identity,
        tmp / "known_hosts",
        proc,
        runtime_port or free_port(),
    )
    dev.pin()
    return dev
