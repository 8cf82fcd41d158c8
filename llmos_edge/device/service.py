"""Service control: the runtime (and ESP32 bridge) under systemd or pidfiles, health and smoke."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from .base import (
    AgentError,
    Layout,
    audit,
    boot_id,
    has_systemd,
    is_resource_error,
    pid_alive,
    read_json,
    write_atomic,
)
from .protocol import RC_REFUSED, RC_RESOURCE
from .venv import python_for


# ---------------------------------------------------------------- service
def runtime_endpoint(release: str) -> tuple[str, int]:
    cfg = read_json(os.path.join(release, "config", "runtime.json"), {})
    assert isinstance(cfg, dict)
    return str(cfg.get("host", "127.0.0.1")), int(cfg.get("port", 8088))


def pidfile_pid(lay: Layout, name: str) -> int | None:
    """The live process recorded in state/<name>.pid (service = the runtime, bridge = ESP32 bridge).

    A record from an earlier boot names nobody, even if its pid number is in use again.
    """
    info = read_json(lay.st(f"{name}.pid"))
    if not isinstance(info, dict) or info.get("boot_id", boot_id()) != boot_id():
        return None
    if pid_alive(int(info["pid"])):
        return int(info["pid"])
    return None


def service_pid(lay: Layout) -> int | None:
    if _systemd_mode():
        out = subprocess.run(
            ["systemctl", "show", "-p", "MainPID", "--value", "llmos-edge"], capture_output=True, text=True
        ).stdout.strip()
        return int(out) if out.isdigit() and int(out) > 0 else None
    return pidfile_pid(lay, "service")


def _systemd_mode() -> bool:
    return has_systemd() and os.getuid() == 0


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def release_processes(lay: Layout) -> dict[int, tuple[str, str]]:
    """{pid: (version, "runtime" | "bridge")} of every live process started from one of our releases.

    A runtime names its release's config/runtime.json on its command line (the launcher and the
    pidfile start both do), a bridge its release's bin/llmos-bridge: that is the served-version
    marker, and it also finds a process whose pidfile was never written (a kill right after start).
    """
    base = os.path.realpath(lay.releases) + "/"
    found: dict[int, tuple[str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for arg in _cmdline(int(entry)):
            if not arg.startswith(base):
                continue
            version, _, rest = arg[len(base) :].partition("/")
            kind = {"config/runtime.json": "runtime", "bin/llmos-bridge": "bridge"}.get(rest)
            if kind and pid_alive(int(entry)):
                found[int(entry)] = (version, kind)
                break
    return found


def _runtime_of(lay: Layout, version: str) -> bool:
    return (version, "runtime") in release_processes(lay).values()


def listening_pids(port: int, candidates: set[int]) -> set[int] | None:
    """Which of `candidates` hold a listening TCP socket on `port`; None when /proc hides it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    if not inodes:
        return set()
    pids = set()
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return None
        for fd in fds:
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.add(pid)
    return pids


def serving(lay: Layout) -> str | None:
    """The version the runtime process answering on its port was started from, else None.

    Not what `current` says: the process itself (its command line) and its listening socket.
    """
    runtimes = {pid: v for pid, (v, kind) in release_processes(lay).items() if kind == "runtime"}
    versions = set(runtimes.values())
    if len(versions) != 1:
        return None
    version = versions.pop()
    release = os.path.join(lay.releases, version)
    if not os.path.isdir(release):
        return None
    host, port = runtime_endpoint(release)
    owners = listening_pids(port, set(runtimes))
    if owners is not None and not owners:
        return None
    try:
        with socket.create_connection((host, port), timeout=1):
            return version
    except OSError:
        return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _stop_pidfile(lay: Layout, name: str) -> None:
    pid = pidfile_pid(lay, name)
    if pid is not None:
        _kill_group(pid)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lay.st(f"{name}.pid"))


def _start_pidfile(
    lay: Layout, name: str, version: str, argv: list[str], cwd: str, env: dict[str, str]
) -> None:
    with open(lay.st(f"{name}.log"), "ab") as log:
        log.write(f"--- llmos-agent: starting {version} at {time.ctime()}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    info = {"pid": proc.pid, "version": version, "boot_id": boot_id()}
    write_atomic(lay.st(f"{name}.pid"), json.dumps(info).encode())


def service_stop(lay: Layout) -> None:
    if _systemd_mode():
        subprocess.run(["systemctl", "stop", "llmos-bridge"], capture_output=True)
        subprocess.run(["systemctl", "stop", "llmos-edge"], capture_output=True)
    else:
        _stop_pidfile(lay, "bridge")
        _stop_pidfile(lay, "service")
    for pid in release_processes(lay):  # one whose pidfile was never written (a kill right after start)
        _kill_group(pid)


def service_start(lay: Layout, version: str) -> None:
    release = os.path.join(lay.releases, version)
    py = python_for(lay, release)
    if _systemd_mode():
        # the unit runs <root>/current/bin/llmos-launch; it takes the release's own venv (releases/<v>/venv)
        # and LLMOS_PYTHON from state/runtime.env only for a release without wheels
        venv = os.path.join(release, "venv")
        env_line = "" if os.path.islink(venv) else f"LLMOS_PYTHON={py}\n"
        write_atomic(lay.st("runtime.env"), env_line.encode())
        _prepare_service_user(lay, release)
        _install_boot_unit(lay)
        _systemd_install(release, "llmos-edge", required=True)
        _systemd_install(release, "llmos-bridge")
        return
    env = dict(os.environ, PYTHONPATH=os.path.join(release, "runtime"), LLMOS_RELEASE=version)
    config = os.path.join(os.path.realpath(release), "config", "runtime.json")
    argv = [py, "-m", "llmos_runtime", "serve", "--config", config]
    _start_pidfile(lay, "service", version, argv, release, env)
    if has_bridge(release):
        bargv, benv = bridge_command(lay, release)
        bargv[0] = os.path.join(os.path.realpath(release), "bin", "llmos-bridge")
        _start_pidfile(lay, "bridge", version, bargv, release, dict(os.environ, LLMOS_PYTHON=py, **benv))


_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _prepare_service_user(lay: Layout, release: str) -> None:
    """The unit's User= exists (a system user is created once) and can append to the request audit log.

    Everything else the runtime reads is world-readable; state/ itself stays the agent's (root's).
    """
    unit = os.path.join(release, "systemd", "llmos-edge.service")
    user = dict(_unit_entries(unit)).get("User")
    if not user or user == "root":
        return
    if not _USER_RE.match(user):
        raise AgentError(f"the service unit names an invalid user {user!r}", RC_REFUSED)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        cmd = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
               "--shell", "/usr/sbin/nologin", user]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AgentError(f"could not create the service user {user}: {proc.stderr.strip()}") from None
        pw = pwd.getpwnam(user)
        audit(lay, "service_user_created", user=user)
    log_path = _runtime_audit_log(release)
    if log_path and os.path.commonpath([log_path, lay.root]) == lay.root:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        os.close(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        os.chown(log_path, pw.pw_uid, pw.pw_gid)


def _runtime_audit_log(release: str) -> str | None:
    cfg_dir = os.path.join(release, "config")
    cfg = read_json(os.path.join(cfg_dir, "runtime.json"), {})
    rel = cfg.get("audit_log") if isinstance(cfg, dict) else None
    return os.path.realpath(os.path.join(cfg_dir, rel)) if isinstance(rel, str) and rel else None


BOOT_UNIT = """# Written by llmos-agent: at boot, finish or revert an activation a power loss interrupted.
[Unit]
Description=llmos-edge: resolve an interrupted activation ({root})
After=network-online.target

[Service]
Type=oneshot
ExecStart={python} {root}/bin/llmos-agent boot --root {root}

[Install]
WantedBy=multi-user.target
"""


def _install_boot_unit(lay: Layout) -> None:
    """systemd starts the committed release through llmos-edge.service; this oneshot resolves a
    pending activation (it stays pending until an entry point runs, so boot runs one)."""
    agent = os.path.join(lay.root, "bin", "llmos-agent")
    if not os.path.isfile(agent):
        return
    text = BOOT_UNIT.format(python=sys.executable or "/usr/bin/python3", root=lay.root)
    dest = "/etc/systemd/system/llmos-agent-boot.service"
    if read_text(dest) == text:
        return
    write_atomic(dest, text.encode())
    for cmd in (["daemon-reload"], ["enable", "llmos-agent-boot"]):
        subprocess.run(["systemctl", *cmd], check=True, capture_output=True)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _systemd_install(release: str, name: str, required: bool = False) -> None:
    """Install and restart the release's unit; an optional unit the release no longer ships is removed."""
    unit, dest = os.path.join(release, "systemd", f"{name}.service"), f"/etc/systemd/system/{name}.service"
    if not os.path.isfile(unit) and not required:
        if os.path.exists(dest):
            subprocess.run(["systemctl", "disable", "--now", name], capture_output=True)
            os.unlink(dest)
            subprocess.run(["systemctl", "daemon-reload"], check=True, capture_output=True)
        return
    shutil.copyfile(unit, dest)
    for cmd in (["daemon-reload"], ["enable", name], ["restart", name]):
        subprocess.run(["systemctl", *cmd], check=True, capture_output=True)


# ---------------------------------------------------------------- ESP32 host bridge (supervised mode)
def has_bridge(release: str) -> bool:
    return os.path.isfile(os.path.join(release, "bin", "llmos-bridge"))


def _unit_entries(path: str) -> list[tuple[str, str]]:
    entries = []
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith(("#", ";", "[")):
                entries.append((key.strip(), value.strip()))
    return entries


def _env_file(path: str) -> dict[str, str]:
    out = {}
    for key, value in _unit_entries(path):
        out[key] = value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value
    return out


def bridge_command(lay: Layout, release: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the bridge as its systemd unit declares them, run without systemd.

    Environment= lines of systemd/llmos-bridge.service, then state/runtime.env and state/bridge.env
    (the operator's overrides, as the unit reads them); ExecStart's arguments with $VARs expanded.
    """
    import re
    import shlex

    env: dict[str, str] = {}
    entries = _unit_entries(os.path.join(release, "systemd", "llmos-bridge.service"))
    for key, value in entries:
        if key == "Environment":
            env.update(item.partition("=")[::2] for item in shlex.split(value))
    env.update(_env_file(lay.st("runtime.env")))
    env.update(_env_file(lay.st("bridge.env")))
    exec_start = next((v for k, v in entries if k == "ExecStart"), "")
    if exec_start:
        args = [
            re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), word)
            for word in shlex.split(exec_start)[1:]
        ]
    else:
        host, port = runtime_endpoint(release)
        args = ["--port", env.get("LLMOS_BRIDGE_PORT", "/dev/ttyACM0"), "--runtime", f"http://{host}:{port}"]
    return [os.path.join(release, "bin", "llmos-bridge"), *args], env


def bridge_running(lay: Layout) -> bool:
    if _systemd_mode():
        return subprocess.run(["systemctl", "is-active", "--quiet", "llmos-bridge"]).returncode == 0
    return pidfile_pid(lay, "bridge") is not None


def wait_healthy(lay: Layout, version: str, timeout: float) -> str | None:
    """None when the runtime accepts connections, else why not."""
    host, port = runtime_endpoint(os.path.join(lay.releases, version))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _systemd_mode() and service_pid(lay) is None and not _runtime_of(lay, version):
            return "the runtime process exited"
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return None
        time.sleep(0.1)
    return f"the runtime did not listen on {host}:{port} within {timeout:.0f}s"


def _scale_args(lay: Layout) -> list[str]:
    return [] if lay.latency_scale == 1 else ["--latency-scale", repr(lay.latency_scale)]


def run_smoke(lay: Layout, version: str, timeout: float) -> tuple[bool, str]:
    release = os.path.join(lay.releases, version)
    host, port = runtime_endpoint(release)
    env = dict(
        os.environ,
        PYTHONPATH=os.path.join(release, "runtime"),
        LLMOS_BASE_URL=f"http://{host}:{port}",
        LLMOS_CONFIG=os.path.join(release, "config/runtime.json"),
    )
    try:
        proc = subprocess.run(
            [python_for(lay, release), "smoke/smoke.py", *_scale_args(lay)],
            cwd=release,
            env=env,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        return (
            False,
            f"smoke test timed out after {timeout:.0f}s\n{(exc.stdout or b'').decode(errors='replace')}",
        )
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    return proc.returncode == 0, out[-4000:]


def log_tail(lay: Layout, lines: int, name: str = "service") -> str:
    if _systemd_mode():  # the units log to the journal
        unit = "llmos-edge" if name == "service" else f"llmos-{name}"
        cmd = ["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"]
        with contextlib.suppress(OSError):
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    try:
        with open(lay.st(f"{name}.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * lines))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_release(lay: Layout, version: str) -> str | None:
    """Stop whatever runs and start `version`; None when started, else why not (a failed check)."""
    service_stop(lay)
    try:
        service_start(lay, version)
    except AgentError as exc:
        if exc.rc == RC_RESOURCE:
            raise
        return f"could not start {version}: {exc}"
    except (OSError, subprocess.SubprocessError) as exc:
        if is_resource_error(exc):
            raise
        detail = getattr(exc, "stderr", b"") or b""
        return f"could not start {version}: {exc}\n{detail.decode(errors='replace')[-1500:]}"
    return None


def check_release(lay: Layout, version: str, timeout: float) -> tuple[bool, str]:
    """Healthy, smoke test passed, and the process answering is `version`'s, not a leftover."""
    why = wait_healthy(lay, version, timeout)
    if why:
        return False, why
    ok, output = run_smoke(lay, version, timeout)
    if ok and has_bridge(os.path.join(lay.releases, version)) and not bridge_running(lay):
        return False, f"the ESP32 bridge of {version} exited:\n{log_tail(lay, 20, 'bridge')}"
    now = serving(lay) if ok else version
    if now != version:
        return False, f"{output}\nthe smoke passed, but the process serving is {now or 'none'}, not {version}"
    return ok, output


