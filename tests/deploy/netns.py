"""Devices in Linux network namespaces (ip netns + veth), each with its own sshd: real links to cut."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import tempfile
from pathlib import Path

from .devices import SSHD, Device, ensure_user, wait_banner, write_sshd_config

RUNTIME_PORT = 8088  # the same in every namespace, so one bundle fits the whole fleet


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], check=check, capture_output=True)


def make_namespace() -> tuple[str, int]:
    """A fresh namespace llmosd-N with a free N (other tests may hold some)."""
    for n in random.sample(range(1, 250), 249):
        name = f"llmosd-{n}"
        if _ip("netns", "add", name, check=False).returncode == 0:
            return name, n
    raise RuntimeError("no free network namespace number")


class NetnsDevice(Device):
    ns: str = ""
    veth: str = ""

    def cut(self) -> None:
        _ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        _ip("link", "set", self.veth, "up")

    def stop(self) -> None:
        pids = _ip("netns", "pids", self.ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        _ip("netns", "del", self.ns, check=False)
        import shutil

        shutil.rmtree(self.home, ignore_errors=True)


def start_netns_device(tmp: Path, identity: Path, authorized: Path) -> NetnsDevice:
    user = ensure_user()
    ns, n = make_namespace()
    veth, addr = f"vd{n}", f"10.200.{n}.2"
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("addr", "add", f"10.200.{n}.1/24", "dev", veth)
        _ip("link", "set", veth, "up")
        for args in (
            ["addr", "add", f"{addr}/24", "dev", "eth0"],
            ["link", "set", "eth0", "up"],
            ["link", "set", "lo", "up"],
        ):
            _ip("netns", "exec", ns, "ip", *args)
    except subprocess.CalledProcessError:
        _ip("netns", "del", ns, check=False)
        raise
    home = Path(tempfile.mkdtemp(prefix="llmos-dev-home-", dir="/tmp"))
    os.chown(home, user.pw_uid, user.pw_gid)
    os.chmod(home, 0o755)
    cfg = write_sshd_config(tmp, 22, addr, authorized)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(cfg)], stderr=subprocess.DEVNULL
    )
    dev = NetnsDevice(
        addr, 22, str(home / "llmos"), home, tmp, identity, tmp / "known_hosts", proc, RUNTIME_PORT
    )
    dev.ns, dev.veth = ns, veth
    try:
        wait_banner(addr, 22)
    except RuntimeError:
        dev.stop()
        raise
    dev.pin()
    return dev


def squat_port(dev: NetnsDevice, port: int) -> subprocess.Popen[bytes]:
    """Break a device: something else already listens on the runtime's port inside its namespace."""
    code = (
        "import http.server,json\nclass H(http.server.BaseHTTPRequestHandler):\n def do_GET(self):\n"
        "  b=json.dumps({'tag':'squatter'}).encode();self.send_response(200);self.end_headers();"
        "self.wfile.write(b)\nhttp.server.HTTPServer(('0.0.0.0'," + str(port) + "),H).serve_forever()"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", dev.ns, "python3", "-c", code])
    wait_port(dev.host, port)
    return proc


def wait_port(host: str, port: int, timeout: float = 10) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")
