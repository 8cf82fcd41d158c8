"""Errors, the device layout and the small file helpers every command uses."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import sys
import time
import uuid

from .protocol import FAULT_ENV, RC_RESOURCE

_CHUNK = 1 << 20
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
_RESOURCE_TEXT = ("No space left on device", "Disk quota exceeded", "Cannot allocate memory", "MemoryError")
_LOW_DISK = 8_000_000  # a venv build that fails with less free than this failed for want of space


class AgentError(Exception):
    def __init__(self, message: str, rc: int = 1, **extra: object) -> None:
        super().__init__(message)
        self.rc = rc
        self.extra = extra


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def uptime() -> float:
    """Seconds on the boot clock: wall-clock steps (1970 -> now) do not move it."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def fault_point(name: str) -> None:
    """Tests only: SIGKILL this process at a named point when $LLMOS_AGENT_FAULT_FILE lists it.

    The file lives outside the device root and only the test writes it (its sshd sets the variable);
    on a real device the variable is unset and this does nothing.
    """
    path = os.environ.get(FAULT_ENV)
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as f:
            wanted = f.read().split()
    except OSError:
        return
    if name in wanted:
        os.kill(os.getpid(), signal.SIGKILL)


def is_resource_error(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS)


def resource_text(output: str) -> str | None:
    """The resource a child process ran out of, from its output (pip, venv, the runtime's log)."""
    for needle in _RESOURCE_TEXT:
        if needle in output:
            return "memory" if "emory" in needle or "allocate" in needle else "disk space"
    return None


def resource_failure(lay: Layout, what: str, cause: str, need: int = 0, **extra: object) -> AgentError:
    """Out of disk or memory: the cause and what to free, never "failed" against the release."""
    free = disk_free(lay.root) if os.path.exists(os.path.dirname(lay.root)) else -1
    if "memory" in cause.lower() or "allocate" in cause:
        hints = [
            f"the device ran out of memory while it tried to {what} "
            f"({mem_available() / 2**20:.0f} MiB available now)",
            "stop other services on the device, or build for a smaller model/budget, then deploy again",
        ]
    else:
        more = f"free at least {need / 1e6:.0f} MB " if need > 0 else "free space "
        hints = [
            f"{more}on the device under {lay.root} ({free / 1e6:.0f} MB free now) and deploy again",
            "old releases go with: llmos-edge releases --device ... --keep 1",
        ]
    hints.append("the release is not marked failed: the same bundle can be deployed again")
    return AgentError(
        f"could not {what}: out of a device resource: {cause.strip()[-300:]}",
        RC_RESOURCE,
        hints=hints,
        resource=True,
        disk_free=free,
        **extra,
    )


# ---------------------------------------------------------------- layout and small helpers
class Layout:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.store = os.path.join(self.root, "store", "sha256")
        self.staging = os.path.join(self.root, "staging")
        self.releases = os.path.join(self.root, "releases")
        self.state = os.path.join(self.root, "state")
        self.current = os.path.join(self.root, "current")
        self.previous = os.path.join(self.root, "previous")
        self.python: str | None = None  # interpreter override for the release being activated
        self.latency_scale = 1.0  # smoke timing budget x N on a slow stand-in (QEMU); answers unchanged

    def ensure(self) -> None:
        for d in (self.store, self.staging, self.releases, self.state, os.path.join(self.root, "bin")):
            os.makedirs(d, exist_ok=True)

    def st(self, name: str) -> str:
        return os.path.join(self.state, name)


def pid_alive(pid: int) -> bool:
    """A process with this pid runs (another user's too: EPERM means alive); a zombie does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def sha256_path(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str, default: object = None) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError, RecursionError):
        return default


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in `path` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Temp file, fsync, rename, fsync the folder; a failure (a full disk) leaves no temp behind."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def audit(lay: Layout, event: str, **details: object) -> None:
    """Append an event; on a full disk the entry is lost rather than the operation it records."""
    os.makedirs(lay.state, exist_ok=True)
    entry = {"time": time.time(), "event": event, "user": os.environ.get("USER", str(os.getuid())), **details}
    try:
        with open(lay.st("audit.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
    except OSError as exc:
        if not is_resource_error(exc):
            raise


def link_target(link: str) -> str | None:
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def switch_link(link: str, target: str) -> None:
    """Point `link` at `target` atomically: a new symlink renamed over the old one."""
    tmp = f"{link}.{uuid.uuid4().hex}.new"
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(link))


def remove_link(link: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
        fsync_dir(os.path.dirname(link))


def safe_relpath(rel: str) -> bool:
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def read_stdin_json() -> dict:
    data = sys.stdin.buffer.read()
    return json.loads(data) if data.strip() else {}


# ---------------------------------------------------------------- probe
def mem_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def disk_free(path: str) -> int:
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def has_systemd() -> bool:
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


