#!/usr/bin/env python3
"""llmos-agent: the device side of `llmos-edge deploy` (python3 stdlib only, one file).

The host runs it over SSH (`python3 -c <bootstrap> CMD ...`, so probing changes nothing on the device)
and ships it in every bundle as bin/llmos-agent. Every command prints one JSON object on stdout.
Layout under ROOT: store/sha256/<hex>, staging/, releases/<version>/, current, previous, state/,
venvs/<key>/ (a release's offline wheels installed once per wheel set, by `prepare`).
Services: the runtime, and for ESP32 host bundles the serial bridge (systemd units, or two
pidfile-managed processes when there is no systemd).
Exit codes: 0 ok, 4 smoke failed (rolled back), 10 locked by someone else, 12 verification failed,
13 refused (bad input), 14 out of a device resource (disk, memory; the version is not marked failed),
1 other failure.

Activation is a transaction (docs/design.md, "Device layout"): state/pending.json, fsync'd, names the
new version, the old release and the phase before anything moves; the release is committed (the
record removed) only once its smoke test passed and the runtime process serving is the new one. Every
entry point (probe, status, activate, rollback, boot) first finishes or reverts a transaction whose
worker died. Work (install, prepare, activate, rollback, boot) holds state/work.lock for as long as it
runs, whether or not the SSH client is still there; ages are measured on the device's boot clock.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

RC_SMOKE, RC_LOCKED, RC_VERIFY, RC_REFUSED, RC_RESOURCE = 4, 10, 12, 13, 14
_CHUNK = 1 << 20
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
_RESOURCE_TEXT = ("No space left on device", "Disk quota exceeded", "Cannot allocate memory", "MemoryError")
_LOW_DISK = 8_000_000  # a venv build that fails with less free than this failed for want of space
PHASES = ("record", "switch", "stop-old", "start-new", "smoke", "commit")


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
    path = os.environ.get("LLMOS_AGENT_FAULT_FILE")
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


def cmd_probe(lay: Layout, args: argparse.Namespace) -> dict:
    """What the host decides on; `current` is the committed release, `serving` what answers."""
    resolved = settle(lay)
    libc, libc_ver = platform.libc_ver()
    return {
        "resolved": resolved,
        "arch": platform.machine(),
        "os": platform.system().lower(),
        "libc": libc or "unknown",
        "libc_version": libc_ver,
        "python": "{}.{}".format(*sys.version_info[:2]),
        "python_full": platform.python_version(),
        "hostname": socket.gethostname(),
        "root": lay.root,
        "root_exists": os.path.isdir(lay.root),
        "disk_free": disk_free(lay.root),
        "mem_available": mem_available(),
        "current": committed(lay),
        "serving": serving(lay) if os.path.isdir(lay.releases) else None,
        "pending": pending(lay),
        "previous": link_target(lay.previous),
        "failed": read_json(lay.st("failed.json"), {}),
        "lock": _lock_info(lay),
        "busy": _lock_info(lay, "work.lock"),
        "device": read_json(lay.st("device.json"), {}),
        "systemd": has_systemd(),
        "uid": os.getuid(),
    }


# ---------------------------------------------------------------- locks
# Two flocks, both freed by the kernel the moment their holder dies, so liveness, never age, decides
# whether a lock is stale:
# - state/lock, the session lock: a `hold` process keeps it for as long as the deploy's SSH session
#   lives; the other commands of that deploy present its token.
# - state/work.lock, the work lock: held by the process doing the work (install, prepare, activate,
#   rollback, boot, resolving a transaction) until that work ends, even if its SSH client went away.
# Each lock file records its holder (pid, boot id, start on the boot clock) for messages; a record
# whose flock is free, or whose boot id is not this boot's, describes nobody.
def _lock_info(lay: Layout, name: str = "lock") -> dict | None:
    info = read_json(lay.st(name))
    if not isinstance(info, dict) or not _flock_held(lay.st(name)):
        return None
    if info.get("boot_id") == boot_id() and isinstance(info.get("since_boot"), int | float):
        info["held_for"] = round(uptime() - float(info["since_boot"]), 1)
    return info


def _flock_held(path: str) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _try_flock(path: str) -> int | None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _record_holder(fd: int, **info: object) -> None:
    data = dict(info, pid=os.getpid(), boot_id=boot_id(), since_boot=uptime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(data).encode(), 0)


def _end_stuck_holder(lay: Layout) -> None:
    """A `hold` session older than its ttl on this boot's clock is ended (never a worker, never by
    wall-clock age: a clock step from 1970 to now must not expire a live lock)."""
    held = _lock_info(lay) or {}
    ttl, age = held.get("ttl"), held.get("held_for")
    if isinstance(ttl, int | float) and isinstance(age, int | float) and age > ttl and held.get("pid"):
        audit(lay, "lock_expired", stale_owner=held.get("owner"), held_for=age, ttl=ttl)
        with contextlib.suppress(OSError):
            os.kill(int(held["pid"]), signal.SIGTERM)
        time.sleep(0.5)


def locked_error(lay: Layout, message: str, held: dict | None) -> AgentError:
    held = held or {}
    return AgentError(
        message,
        RC_LOCKED,
        holder=held.get("owner") or held.get("work"),
        held_for=held.get("held_for"),
        holder_pid=held.get("pid"),
    )


def cmd_hold(lay: Layout, args: argparse.Namespace) -> dict:
    """Take the session lock and keep it until stdin closes (the deploy's session ends)."""
    lay.ensure()
    fd = _try_flock(lay.st("lock"))
    if fd is None:
        _end_stuck_holder(lay)
        fd = _try_flock(lay.st("lock"))
    if fd is None:
        raise locked_error(lay, "device is locked", _lock_info(lay))
    deadline = time.monotonic() + args.wait
    while (worker := _lock_info(lay, "work.lock")) and time.monotonic() < deadline:
        time.sleep(0.2)  # an orphaned worker of an earlier session still runs: let it finish first
    if worker:
        os.close(fd)
        what = f"{worker.get('work')} (pid {worker.get('pid')})"
        raise locked_error(lay, f"device is busy: {what} is still running", dict(worker, owner=what))
    _record_holder(fd, token=args.token, owner=args.owner, ttl=args.ttl)
    print(json.dumps({"ok": True, "locked": True, "root": lay.root}), flush=True)
    while sys.stdin.buffer.read(4096):
        pass
    still = read_json(lay.st("lock"))
    if isinstance(still, dict) and still.get("token") == args.token:
        os.ftruncate(fd, 0)
    os.close(fd)
    raise SystemExit(0)


def require_lock(lay: Layout, token: str | None) -> None:
    held = _lock_info(lay)
    if not held or held.get("token") != token:
        raise locked_error(lay, "this deploy does not hold the device lock (it was lost)", held)


@contextlib.contextmanager
def work_lock(lay: Layout, work: str):  # type: ignore[no-untyped-def]
    """Held by this process while it changes releases or the service; SIGHUP/SIGPIPE cannot end it."""
    lay.ensure()
    fd = _try_flock(lay.st("work.lock"))
    if fd is None:
        held = _lock_info(lay, "work.lock") or {}
        what = f"{held.get('work', 'another command')} (pid {held.get('pid')})"
        raise locked_error(lay, f"device is busy: {what} is still running", dict(held, owner=what))
    for sig in (signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    _record_holder(fd, work=work)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


# ---------------------------------------------------------------- store and staging
def part_path(lay: Layout, sha: str) -> str:
    return os.path.join(lay.staging, f"{sha}.part")


def check_sha(sha: str) -> str:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise AgentError(f"not a sha256: {sha!r}", RC_REFUSED)
    return sha


def cmd_have(lay: Layout, args: argparse.Namespace) -> dict:
    """Which wanted blobs the store already holds, and how much of the others staging holds."""
    wanted = read_stdin_json().get("files", {})
    present, partial = [], {}
    for sha, size in wanted.items():
        blob = os.path.join(lay.store, check_sha(sha))
        if os.path.isfile(blob) and os.path.getsize(blob) == size:
            present.append(sha)
        elif os.path.isfile(part_path(lay, sha)):
            got = os.path.getsize(part_path(lay, sha))
            partial[sha] = got if got <= size else 0  # longer than the file can be: start over
    return {"present": present, "partial": partial}


def cmd_receive(lay: Layout, args: argparse.Namespace) -> dict:
    """Write a stream of (JSON header line, bytes) records into staging/<sha>.part at their offsets.

    One process takes the whole transfer (no per-file round trips); when the link drops, what arrived
    stays on disk and `have` reports it, so the next run resumes from there. A full disk ends it with
    the cause (not as a lost link), and the part being written is removed.
    """
    require_lock(lay, args.token)
    stream = sys.stdin.buffer
    received = 0
    while line := stream.readline():
        hdr = json.loads(line)
        path = part_path(lay, check_sha(hdr["sha"]))
        offset, remaining = int(hdr["offset"]), int(hdr["size"])
        try:
            done = _receive_one(stream, path, hdr["sha"], offset, remaining)
        except OSError as exc:
            if not is_resource_error(exc):
                raise
            with contextlib.suppress(OSError):
                os.unlink(path)
            need = remaining + int(hdr.get("after", 0))
            raise resource_failure(lay, "store the transfer", str(exc), need, received=received) from None
        received += done
        if done < remaining:
            return {"received": received, "complete": False}
    return {"received": received, "complete": True}


def _receive_one(stream: object, path: str, sha: str, offset: int, remaining: int) -> int:
    got = 0
    read = stream.read  # type: ignore[attr-defined]
    with open(path, "r+b" if offset else "wb") as f:
        if offset and f.seek(0, os.SEEK_END) != offset:
            raise AgentError(f"staged {sha[:12]} is not {offset} bytes long; rerun", RC_VERIFY)
        while got < remaining:
            chunk = read(min(_CHUNK, remaining - got))
            if not chunk:
                break
            f.write(chunk)
            got += len(chunk)
        f.flush()
    return got


def cmd_commit(lay: Layout, args: argparse.Namespace) -> dict:
    """Verify staged blobs and move the good ones into the store; bad ones are deleted.

    Each part is first renamed to a unique name so a stale receiver from a cut transfer cannot
    rename or truncate it behind our back; what it might still write through an open handle is the
    same content-addressed bytes at the same offsets, and the hash is taken after the rename.
    """
    require_lock(lay, args.token)
    wanted = read_stdin_json().get("files", {})
    committed, bad, missing = [], [], []
    for sha, size in wanted.items():
        part = part_path(lay, check_sha(sha))
        if not os.path.isfile(part):
            missing.append(sha)
            continue
        checking = os.path.join(lay.staging, f"{sha}.{uuid.uuid4().hex}.verify")
        os.replace(part, checking)
        if os.path.getsize(checking) == size and sha256_path(checking) == sha:
            os.chmod(checking, 0o444)
            os.replace(checking, os.path.join(lay.store, sha))
            committed.append(sha)
        else:
            os.unlink(checking)
            bad.append(sha)
    if bad:
        audit(lay, "staging_corrupt", blobs=bad)
    return {"committed": committed, "bad": bad, "missing": missing}


# ---------------------------------------------------------------- install
def _place(lay: Layout, sha: str, dest: str, executable: bool) -> None:
    blob = os.path.join(lay.store, sha)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if executable:
        shutil.copyfile(blob, dest)
        os.chmod(dest, 0o755)
        return
    try:
        os.link(blob, dest)
    except OSError:
        shutil.copyfile(blob, dest)


def _verify_release(folder: str, files: dict) -> list[str]:
    bad = []
    for rel, entry in files.items():
        p = os.path.join(folder, rel)
        if not os.path.isfile(p) or os.path.getsize(p) != entry["size"] or sha256_path(p) != entry["sha256"]:
            bad.append(entry["sha256"])
    return bad


def cmd_install(lay: Layout, args: argparse.Namespace) -> dict:
    """Build releases/<version>/ from the store, verifying every file, then rename it into place."""
    require_lock(lay, args.token)
    with work_lock(lay, f"install {args.version}"):
        try:
            return _install(lay, args)
        except OSError as exc:
            if is_resource_error(exc):
                raise resource_failure(lay, f"install {args.version}", str(exc)) from None
            raise


def _install(lay: Layout, args: argparse.Namespace) -> dict:
    data = read_stdin_json()
    manifest_text, sig_text = data["manifest"], data.get("signature")
    files = json.loads(manifest_text)["files"]
    version = args.version
    if not safe_relpath(version) or "/" in version:
        raise AgentError(f"unsafe version name {version!r}", RC_REFUSED)
    for rel in files:
        if not safe_relpath(rel):
            raise AgentError(f"manifest path escapes the release folder: {rel!r}", RC_REFUSED)
    final = os.path.join(lay.releases, version)
    if os.path.isdir(final) and not _verify_release(final, files):
        return {"installed": version, "reused": True}
    if os.path.isdir(final) and link_target(lay.current) == version:
        raise AgentError(
            f"release {version} is active with different content; give the bundle a new version", RC_REFUSED
        )
    missing = [
        e["sha256"] for e in files.values() if not os.path.isfile(os.path.join(lay.store, e["sha256"]))
    ]
    if missing:
        raise AgentError("blobs missing from the store", RC_VERIFY, missing=sorted(set(missing)))
    for name in os.listdir(lay.releases):  # left by an install that was killed (we hold the work lock)
        if name.startswith(".") and name.endswith(".partial"):
            shutil.rmtree(os.path.join(lay.releases, name), ignore_errors=True)
    tmp = os.path.join(lay.releases, f".{version}.{uuid.uuid4().hex}.partial")
    os.makedirs(tmp)
    try:
        for rel, entry in files.items():
            _place(lay, entry["sha256"], os.path.join(tmp, rel), rel.startswith("bin/"))
        bad = _verify_release(tmp, files)
        if bad:
            for sha in bad:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(lay.store, sha))
            raise AgentError("store blobs failed verification", RC_VERIFY, missing=sorted(set(bad)))
        write_atomic(os.path.join(tmp, "manifest.json"), manifest_text.encode())
        if sig_text is not None:
            write_atomic(os.path.join(tmp, "manifest.sig"), sig_text.encode())
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _self_install(lay, final)
    audit(lay, "install", version=version, unsigned=sig_text is None, **data.get("audit", {}))
    return {"installed": version, "reused": False}


def _self_install(lay: Layout, release: str) -> None:
    src = os.path.join(release, "bin", "llmos-agent")
    if os.path.isfile(src):
        with open(src, "rb") as f:
            write_atomic(os.path.join(lay.root, "bin", "llmos-agent"), f.read(), 0o755)


def cmd_clean_staging(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    removed = 0
    for name in os.listdir(lay.staging) if os.path.isdir(lay.staging) else []:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(lay.staging, name))
            removed += 1
    return {"removed": removed}


# ---------------------------------------------------------------- service
def runtime_endpoint(release: str) -> tuple[str, int]:
    cfg = read_json(os.path.join(release, "config", "runtime.json"), {})
    assert isinstance(cfg, dict)
    return str(cfg.get("host", "127.0.0.1")), int(cfg.get("port", 8088))


def _configured_python(lay: Layout) -> str | None:
    svc = read_json(lay.st("service.json"), {})
    return lay.python or (svc.get("python") if isinstance(svc, dict) else None)


def python_for(lay: Layout, release: str) -> str:
    """The interpreter for the runtime: a venv built from the bundle's wheels, else the configured one."""
    base = _configured_python(lay) or sys.executable
    venv, _built = ensure_venv(lay, release, base)
    return venv or base


# ---------------------------------------------------------------- offline wheels -> venvs/<key>/
# A venv is built once per (base interpreter, wheel set): a redeploy with the same wheels reuses it.
# It is built under a temp name and renamed when complete, so a cut or failed build leaves nothing
# that could be mistaken for a usable venv; the marker file is written last, inside the temp dir.
VENV_MARKER = ".llmos-venv.json"


def release_wheels(release: str) -> dict[str, str]:
    """{wheel file name: sha256} of a release (hashes from its manifest when it lists them)."""
    wdir = os.path.join(release, "wheels")
    names = sorted(n for n in os.listdir(wdir) if n.endswith(".whl")) if os.path.isdir(wdir) else []
    manifest = read_json(os.path.join(release, "manifest.json"), {})
    files = manifest.get("files", {}) if isinstance(manifest, dict) else {}
    return {
        n: str((files.get(f"wheels/{n}") or {}).get("sha256") or sha256_path(os.path.join(wdir, n)))
        for n in names
    }


def _clean_pip_env() -> dict[str, str]:
    """The device's pip configuration must not reach an offline install (no index, no extra links)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _venv_step(
    lay: Layout, release: str, argv: list[str], what: str, base: str, timeout: float = 1800
) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, env=_clean_pip_env(), timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if isinstance(exc, OSError) and is_resource_error(exc):
            raise resource_failure(lay, what, str(exc), _wheels_need(release)) from None
        raise _venv_error(what, base, str(exc)) from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).decode(errors="replace")
        free = disk_free(lay.root)  # measured now, before the failed build is cleared away
        if resource_text(output) or free < _LOW_DISK:
            # a full disk makes ensurepip fail too (venv hides its output): the cause is the disk
            tail = "\n".join(line for line in output.splitlines() if resource_text(line))[-300:]
            cause = tail or f"No space left on device: {free / 1e6:.1f} MB free under {lay.root}"
            raise resource_failure(lay, what, cause, _wheels_need(release))
        raise _venv_error(what, base, output)


def _venv_error(what: str, base: str, output: str) -> AgentError:
    hints = ["the release was not activated: the previous release keeps serving"]
    if "ensurepip" in output or "No module named venv" in output:
        hints.append("install the venv module on the device (apt install python3-venv) and deploy again")
    hints += [
        "check that the bundle was built for this device's platform and Python (llmos-edge inspect BUNDLE)",
        "or build with --no-wheels and pass --device-python PATH (a python that has the runtime's packages)",
    ]
    tail = "\n".join(output.strip().splitlines()[-12:])
    return AgentError(f"could not {what} with {base}:\n{tail}", 1, hints=hints, venv_output=tail)


def _base_version(base: str) -> str:
    if base == sys.executable:
        return sys.version
    proc = subprocess.run([base, "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise _venv_error("run the device python", base, proc.stderr or "it did not start")
    return proc.stdout.strip()


def ensure_venv(lay: Layout, release: str, base: str) -> tuple[str | None, bool]:
    """(python of the release's venv, whether it was built now); (None, False) for a wheel-less bundle."""
    wheels = release_wheels(release)
    if not wheels:
        return None, False
    ident = {"python": os.path.abspath(shutil.which(base) or base), "version": _base_version(base)}
    key = hashlib.sha256(json.dumps([ident, sorted(wheels.items())]).encode()).hexdigest()[:20]
    parent = os.path.join(lay.root, "venvs")
    venv = os.path.join(parent, key)
    py = os.path.join(venv, "bin", "python3")
    if os.path.isfile(os.path.join(venv, VENV_MARKER)) and os.path.exists(py):
        _link_venv(release, venv)
        return py, False
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):  # leftovers of builds that were cut off (we hold the device lock)
        if name.endswith(".partial"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    tmp = os.path.join(parent, f".{key}.{uuid.uuid4().hex}.partial")
    try:
        _venv_step(lay, release, [base, "-m", "venv", tmp], "create a venv for the offline wheels", base)
        wdir = os.path.join(release, "wheels")
        pip = [os.path.join(tmp, "bin", "python3"), "-m", "pip", "install", "--no-index", "--no-cache-dir"]
        pip += ["--find-links", wdir, *[os.path.join(wdir, n) for n in wheels]]
        _venv_step(lay, release, pip, "install the bundle's offline wheels", base)
        marker = dict(ident, wheels=wheels, built=time.time())
        write_atomic(os.path.join(tmp, VENV_MARKER), json.dumps(marker, sort_keys=True).encode())
        if os.path.isdir(venv):  # an unfinished venv without a marker: never used, replace it
            shutil.rmtree(venv)
        os.rename(tmp, venv)  # scripts keep the temp path in their shebangs; we only run bin/python3 -m
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _link_venv(release, venv)
    return py, True


def _link_venv(release: str, venv: str) -> None:
    """releases/<v>/venv -> venvs/<key>: bin/llmos-launch starts a release with its own venv, in
    systemd and pidfile mode alike, whichever release `current` names after a crash or a reboot."""
    link = os.path.join(release, "venv")
    if os.path.islink(link) and os.readlink(link) == venv:
        return
    switch_link(link, venv)


def _pid_alive(pid: int) -> bool:
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


def pidfile_pid(lay: Layout, name: str) -> int | None:
    """The live process recorded in state/<name>.pid (service = the runtime, bridge = ESP32 bridge).

    A record from an earlier boot names nobody, even if its pid number is in use again.
    """
    info = read_json(lay.st(f"{name}.pid"))
    if not isinstance(info, dict) or info.get("boot_id", boot_id()) != boot_id():
        return None
    if _pid_alive(int(info["pid"])):
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
            if kind and _pid_alive(int(entry)):
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
    while time.monotonic() < deadline and _pid_alive(pid):
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


def cmd_prepare(lay: Layout, args: argparse.Namespace) -> dict:
    """Build (or reuse) the venv of an installed release's offline wheels, before anything is stopped.

    A failure leaves the running release untouched; it marks this version failed unless the device
    ran out of disk or memory (then the cause is reported and the same bundle can come again).
    """
    require_lock(lay, args.token)
    version = args.version
    release = os.path.join(lay.releases, version or "")
    if not version or not safe_relpath(version) or "/" in version or not os.path.isdir(release):
        raise AgentError(f"release {version} is not installed", RC_REFUSED)
    base = args.python or _configured_python(lay) or sys.executable
    t0 = time.monotonic()
    with work_lock(lay, f"prepare {version}"):
        try:
            venv, built = ensure_venv(lay, release, base)
        except AgentError as exc:
            exc.extra["active"] = link_target(lay.current)
            if exc.rc == RC_RESOURCE:
                audit(lay, "venv_no_resource", version=version, error=str(exc)[-500:])
                raise
            mark_failed(lay, version, f"offline wheels: {exc}")
            audit(lay, "venv_failed", version=version, error=str(exc)[-500:])
            raise
        except OSError as exc:
            if not is_resource_error(exc):
                raise
            need = _wheels_need(release)
            raise resource_failure(lay, f"build the venv of {version}", str(exc), need) from None
    if built:
        audit(lay, "venv_built", version=version, venv=venv, seconds=round(time.monotonic() - t0, 1))
    return {"venv": venv, "built": built, "seconds": round(time.monotonic() - t0, 2)}


def _wheels_need(release: str) -> int:
    """A venv takes about three times its wheels' size once unpacked (plus pip itself)."""
    wdir = os.path.join(release, "wheels")
    names = os.listdir(wdir) if os.path.isdir(wdir) else []
    return 3 * sum(os.path.getsize(os.path.join(wdir, n)) for n in names) + 30_000_000


# ---------------------------------------------------------------- activate / rollback: a transaction
# state/pending.json names the new version, the old release (and the old `previous`) and the phase;
# it is written (fsync'd) before anything moves and removed only at commit, after the smoke test
# passed and the new release's own process was seen serving. While it exists, the committed release
# is its `old`. A worker that dies mid-way (kill -9, power loss) leaves it behind; the next entry
# point finishes the transaction (re-runs the smoke test) or reverts it.
def mark_failed(lay: Layout, version: str, reason: str) -> None:
    failed = read_json(lay.st("failed.json"), {})
    assert isinstance(failed, dict)
    failed[version] = {"time": time.time(), "reason": reason[-500:]}
    write_atomic(lay.st("failed.json"), json.dumps(failed, indent=2, sort_keys=True).encode())


def pending(lay: Layout) -> dict | None:
    """The activation record, or None; one naming anything but release folders counts as unreadable."""
    try:
        if os.path.getsize(lay.st("pending.json")) > 65536:
            return None
    except OSError:
        return None
    rec = read_json(lay.st("pending.json"))
    if not isinstance(rec, dict) or not _version_name(rec.get("version")):
        return None
    if not all(rec.get(k) is None or _version_name(rec.get(k)) for k in ("old", "old_previous")):
        return None
    return rec


def _version_name(name: object) -> bool:
    return isinstance(name, str) and safe_relpath(name) and "/" not in name


def committed(lay: Layout) -> str | None:
    rec = pending(lay)
    return rec.get("old") if rec else link_target(lay.current)


def _phase(lay: Layout, rec: dict, phase: str) -> None:
    rec["phase"] = phase
    write_atomic(lay.st("pending.json"), json.dumps(rec, sort_keys=True).encode())


def _clear_pending(lay: Layout) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lay.st("pending.json"))
    fsync_dir(lay.state)


def transaction(lay: Layout, version: str, timeout: float, event: str, **opts: object) -> dict:
    """Move the device to `version`: commit it once it proves itself, else put the old one back."""
    old = link_target(lay.current)
    rec = {"version": version, "old": old, "old_previous": link_target(lay.previous), "event": event,
           "timeout": timeout, "latency_scale": lay.latency_scale, "since_boot": uptime(), **opts}
    _phase(lay, rec, "record")  # a full disk fails here, before anything moved
    fault_point("record")
    try:
        if old and old != version:
            switch_link(lay.previous, os.path.join("releases", old))
        _phase(lay, rec, "switch")
        switch_link(lay.current, os.path.join("releases", version))
        fault_point("switch")
        _phase(lay, rec, "stop-old")
        service_stop(lay)
        fault_point("stop-old")
        _phase(lay, rec, "start-new")
        lay.python = rec.get("python")  # type: ignore[assignment]
        why = start_release(lay, version)
        fault_point("start-new")
        _phase(lay, rec, "smoke")
        ok, output = check_release(lay, version, timeout) if why is None else (False, why)
        fault_point("smoke")
        if ok:
            _commit(lay, rec)
            return {"active": version, "previous": old, "smoke": output[-4000:]}
    except Exception as exc:
        restored = _revert(lay, rec)
        if is_resource_error(exc):
            raise resource_failure(lay, f"activate {version}", str(exc), restored=restored) from None
        if isinstance(exc, AgentError):
            exc.extra.setdefault("restored", restored)
        raise
    return _failed(lay, rec, output)


def _failed(lay: Layout, rec: dict, output: str) -> dict:
    """The new release did not prove itself: put the old one back, and say why."""
    version = rec["version"]
    excerpt = log_tail(lay, 40)
    cause = resource_text(output) or resource_text(excerpt)
    if not cause and rec.get("mark_failed"):
        mark_failed(lay, version, output)
    restored = _revert(lay, rec)
    audit(lay, "smoke_failed", version=version, restored=restored, resource=cause)
    if cause:
        raise resource_failure(lay, f"start {version}", f"{cause}: {output[-300:]}", restored=restored)
    raise AgentError(
        f"release {version} failed its smoke test",
        RC_SMOKE,
        smoke=output[-2000:],
        log=excerpt,
        restored=restored,
    )


def _commit(lay: Layout, rec: dict) -> None:
    version = rec["version"]
    _phase(lay, rec, "commit")
    if rec.get("python"):
        write_atomic(lay.st("service.json"), json.dumps({"python": rec["python"]}).encode())
    failed = read_json(lay.st("failed.json"), {})
    if isinstance(failed, dict) and failed.pop(version, None) is not None:
        write_atomic(lay.st("failed.json"), json.dumps(failed, indent=2, sort_keys=True).encode())
    if rec.get("target"):
        write_atomic(lay.st("device.json"), json.dumps({"target": rec["target"]}).encode())
    fault_point("commit")
    _clear_pending(lay)  # the commit point
    scaled = {"latency_scale": lay.latency_scale} if lay.latency_scale != 1 else {}
    took = round(uptime() - float(rec.get("since_boot", uptime())), 1)
    event = str(rec.get("event", "activate"))
    audit(lay, event, version=version, previous=rec.get("old"), seconds=took, **scaled)


def _revert(lay: Layout, rec: dict) -> str | None:
    """Back to the old release (current, previous, the service); the version that serves again."""
    with contextlib.suppress(OSError):
        _phase(lay, rec, "revert")
    old, prev = rec.get("old"), rec.get("old_previous")
    lay.python = None
    restored = None
    if old and os.path.isdir(os.path.join(lay.releases, old)):
        switch_link(lay.current, os.path.join("releases", old))
        if serving(lay) == old:
            restored = old
        else:
            with contextlib.suppress(AgentError, OSError):
                why = start_release(lay, old)
                if why is None and check_release(lay, old, float(rec.get("timeout", 60)))[0]:
                    restored = old
    else:
        service_stop(lay)
        remove_link(lay.current)
    if prev:
        switch_link(lay.previous, os.path.join("releases", prev))
    else:
        remove_link(lay.previous)
    _clear_pending(lay)
    return restored


def resolve_pending(lay: Layout) -> dict | None:
    """Finish (smoke again, commit) a switched transaction whose worker died, else revert it."""
    rec = pending(lay)
    if rec is None:
        if os.path.exists(lay.st("pending.json")):  # unreadable (written atomically, so not by us)
            audit(lay, "pending_unreadable", current=link_target(lay.current))
            _clear_pending(lay)
        return None
    version, phase = rec["version"], rec.get("phase")
    lay.latency_scale = float(rec.get("latency_scale", 1.0))
    timeout = float(rec.get("timeout", 60))
    finish = phase != "revert" and link_target(lay.current) == version
    outcome, restored, output = "reverted", None, ""
    if finish and os.path.isdir(os.path.join(lay.releases, version)):
        try:
            lay.python = rec.get("python")
            # serving already (killed at smoke): smoke it again; else (or with no pidfile to manage it
            # by, killed right after the start) start it afresh
            up = serving(lay) == version and (_systemd_mode() or service_pid(lay) is not None)
            why = None if up else start_release(lay, version)
            ok, output = check_release(lay, version, timeout) if why is None else (False, why)
        except (AgentError, OSError) as exc:
            ok, output = False, f"could not start {version}: {exc}"
        if ok:
            _commit(lay, rec)
            outcome = "finished"
        else:
            cause = resource_text(output) or resource_text(log_tail(lay, 40))
            if not cause and rec.get("mark_failed") and not output.startswith("could not start"):
                mark_failed(lay, version, output)
            restored = _revert(lay, rec)
    else:
        restored = _revert(lay, rec)
    result = {"version": version, "old": rec.get("old"), "phase": phase, "outcome": outcome,
              "restored": restored, "serving": serving(lay)}
    audit(lay, "pending_resolved", **result, why=output[-300:])
    return result


def settle(lay: Layout) -> dict | None:
    """What probe and status do first: resolve a transaction left by a dead worker; a live worker's
    transaction is reported as in progress, not touched."""
    if not os.path.isfile(lay.st("pending.json")):
        return None
    try:
        with work_lock(lay, "resolve a pending activation"):
            return resolve_pending(lay)
    except AgentError:
        rec, worker = pending(lay) or {}, _lock_info(lay, "work.lock") or {}
        return {"version": rec.get("version"), "phase": rec.get("phase"), "outcome": "in-progress",
                "worker": worker.get("work"), "worker_pid": worker.get("pid"), "for": worker.get("held_for")}


def cmd_activate(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    version = args.version
    with work_lock(lay, f"activate {version}"):
        resolved = resolve_pending(lay)
        if not version or not safe_relpath(version) or not os.path.isdir(os.path.join(lay.releases, version)):
            raise AgentError(f"release {version} is not installed", RC_REFUSED)
        res = transaction(lay, version, args.timeout, "activate", python=args.python, target=args.target,
                          mark_failed=True)
    return dict(res, resolved=resolved)


def cmd_rollback(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    with work_lock(lay, "rollback"):
        resolved = resolve_pending(lay)
        cur, target = link_target(lay.current), args.to or link_target(lay.previous)
        if not target or not safe_relpath(target) or not os.path.isdir(os.path.join(lay.releases, target)):
            raise AgentError("there is no previous release to roll back to", RC_REFUSED)
        try:
            res = transaction(lay, target, args.timeout, "rollback", from_version=cur)
        except AgentError as exc:
            if exc.rc == RC_SMOKE:
                back = exc.extra.get("restored")
                exc.args = (f"release {target} is not healthy; {back or 'nothing'} serves again",)
            raise
    return {"active": target, "previous": cur, "resolved": resolved, "smoke": res.get("smoke", "")}


def cmd_boot(lay: Layout, args: argparse.Namespace) -> dict:
    """Run at boot (init script, cron @reboot, a supervisor, or llmos-agent-boot.service): resolve a
    transaction a power loss interrupted, then make sure the committed release serves."""
    if not os.path.isdir(lay.releases):
        return {"resolved": None, "committed": None, "serving": None, "started": False}
    with work_lock(lay, "boot"):
        resolved = resolve_pending(lay)
        cur = link_target(lay.current)
        started = False
        if cur and os.path.isdir(os.path.join(lay.releases, cur)):
            if _systemd_mode() and wait_healthy(lay, cur, args.timeout) is None and serving(lay) == cur:
                pass  # systemd started the unit itself
            elif serving(lay) != cur:
                why = start_release(lay, cur)
                if why is None:
                    why = wait_healthy(lay, cur, args.timeout)
                if why is not None:
                    audit(lay, "boot_failed", version=cur, why=why[-500:])
                    msg = f"the committed release {cur} did not start: {why}"
                    raise AgentError(msg, 1, log=log_tail(lay, 40))
                started = True
        now = serving(lay)
        audit(lay, "boot", committed=cur, serving=now, started=started, resolved=resolved)
    return {"resolved": resolved, "committed": cur, "serving": now, "started": started}


# ---------------------------------------------------------------- status / releases / logs
def _releases(lay: Layout) -> list[dict]:
    out = []
    for name in sorted(os.listdir(lay.releases)) if os.path.isdir(lay.releases) else []:
        if name.startswith("."):
            continue
        path = os.path.join(lay.releases, name)
        out.append({"version": name, "installed": os.path.getmtime(path)})
    return sorted(out, key=lambda r: r["installed"])


def cmd_status(lay: Layout, args: argparse.Namespace) -> dict:
    """`current` is the committed release; `serving` what actually answers; any gap is spelled out."""
    resolved = settle(lay)
    cur, now = committed(lay), serving(lay)
    rec = pending(lay)
    problems = []
    if rec:
        problems.append(f"activation of {rec['version']} in progress (phase {rec.get('phase')}); "
                        f"{cur or 'nothing'} stays committed until it passes")
    if cur and now != cur:
        problems.append(f"committed release {cur} is not serving (serving: {now or 'nothing'})")
    elif not cur and now:
        problems.append(f"{now} serves but no release is committed")
    return {
        "current": cur,
        "serving": now,
        "pending": rec and {k: rec.get(k) for k in ("version", "old", "phase")},
        "discrepancy": "; ".join(problems) or None,
        "resolved": resolved,
        "previous": link_target(lay.previous),
        "pid": service_pid(lay),
        "bridge_pid": pidfile_pid(lay, "bridge"),
        "listening": now is not None and now == cur,
        "failed": read_json(lay.st("failed.json"), {}),
        "lock": _lock_info(lay),
        "busy": _lock_info(lay, "work.lock"),
        "releases": [r["version"] for r in _releases(lay)],
        "hostname": socket.gethostname(),
    }


def cmd_releases(lay: Layout, args: argparse.Namespace) -> dict:
    """List releases; with --keep N prune all but the newest N (never current or previous)."""
    removed: list[str] = []
    if args.keep is not None:
        require_lock(lay, args.token)
        with work_lock(lay, "prune"):
            resolve_pending(lay)  # settle which releases are current and previous first
            removed = _prune(lay, args.keep)
    keep = {link_target(lay.current), link_target(lay.previous)}
    return {"releases": [dict(r, current=r["version"] in keep) for r in _releases(lay)], "removed": removed}


def _prune(lay: Layout, count: int) -> list[str]:
    rels = _releases(lay)
    keep = {link_target(lay.current), link_target(lay.previous)}
    newest = {r["version"] for r in rels[-count:]} if count > 0 else set()
    removed = []
    for r in rels:
        if r["version"] not in keep and r["version"] not in newest:
            shutil.rmtree(os.path.join(lay.releases, r["version"]))
            removed.append(r["version"])
    freed = _gc_store(lay)
    venvs = _gc_venvs(lay)
    audit(lay, "prune", removed=removed, keep=count, store_freed=freed, venvs_removed=venvs)
    return removed


def _gc_venvs(lay: Layout) -> list[str]:
    """Venvs whose wheel set no remaining release ships are deleted (their marker lists the wheels)."""
    wanted = [release_wheels(os.path.join(lay.releases, r["version"])) for r in _releases(lay)]
    parent = os.path.join(lay.root, "venvs")
    removed = []
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        marker = read_json(os.path.join(parent, name, VENV_MARKER))
        if not isinstance(marker, dict) or marker.get("wheels") not in wanted:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    return removed


def _gc_store(lay: Layout) -> int:
    """Blobs no release links to any more (link count 1) are deleted."""
    freed = 0
    for name in os.listdir(lay.store) if os.path.isdir(lay.store) else []:
        p = os.path.join(lay.store, name)
        st = os.stat(p)
        if st.st_nlink == 1:
            os.unlink(p)
            freed += st.st_size
    return freed


def cmd_logs(lay: Layout, args: argparse.Namespace) -> dict:
    events = []
    with contextlib.suppress(FileNotFoundError), open(lay.st("audit.jsonl"), encoding="utf-8") as f:
        events = [json.loads(line) for line in f.readlines()[-args.lines :]]
    return {"log": log_tail(lay, args.lines), "audit": events}


# ---------------------------------------------------------------- entry
COMMANDS = {
    "probe": cmd_probe,
    "hold": cmd_hold,
    "have": cmd_have,
    "receive": cmd_receive,
    "commit": cmd_commit,
    "install": cmd_install,
    "prepare": cmd_prepare,
    "clean-staging": cmd_clean_staging,
    "activate": cmd_activate,
    "boot": cmd_boot,
    "rollback": cmd_rollback,
    "status": cmd_status,
    "releases": cmd_releases,
    "logs": cmd_logs,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmos-agent")
    p.add_argument("command", choices=sorted(COMMANDS))
    p.add_argument("--root", default="~/llmos")
    p.add_argument("--token")
    p.add_argument("--owner", default="unknown")
    p.add_argument("--ttl", type=float, default=3600.0)
    p.add_argument("--wait", type=float, default=0.0)
    p.add_argument("--version")
    p.add_argument("--to")
    p.add_argument("--target")
    p.add_argument("--python")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--latency-scale", type=float, default=1.0)
    p.add_argument("--keep", type=int)
    p.add_argument("--lines", type=int, default=50)
    return p


def _answer(payload: dict, rc: int) -> int:
    """The one JSON line; a client that went away (an orphaned worker) does not change the outcome."""
    with contextlib.suppress(OSError):
        print(json.dumps(payload, sort_keys=True, default=str), flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lay = Layout(args.root)
    lay.latency_scale = args.latency_scale
    try:
        result = COMMANDS[args.command](lay, args)
        return _answer({"ok": True, **result}, 0)
    except AgentError as exc:
        return _answer({"ok": False, "error": str(exc), **exc.extra}, exc.rc)
    except (OSError, MemoryError) as exc:
        if not is_resource_error(exc):
            return _answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 1)
        err = resource_failure(lay, args.command, str(exc) or type(exc).__name__)
        return _answer({"ok": False, "error": str(err), **err.extra}, err.rc)
    except Exception as exc:  # report device-side failures as JSON, the host maps them to DeviceError
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, sort_keys=True))
        return 1


if __name__ == "__main__":
    sys.exit(main())
