#!/usr/bin/env python3
"""llmos-agent: the device side of `llmos-edge deploy` (python3 stdlib only, one file).

The host runs it over SSH (`python3 -c <bootstrap> CMD ...`, so probing changes nothing on the device)
and ships it in every bundle as bin/llmos-agent. Every command prints one JSON object on stdout.
Layout under ROOT: store/sha256/<hex>, staging/, releases/<version>/, current, previous, state/.
Exit codes: 0 ok, 4 smoke failed (rolled back), 10 locked by someone else, 12 verification failed,
13 refused (bad input), 1 other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

RC_SMOKE, RC_LOCKED, RC_VERIFY, RC_REFUSED = 4, 10, 12, 13
_CHUNK = 1 << 20


class AgentError(Exception):
    def __init__(self, message: str, rc: int = 1, **extra: object) -> None:
        super().__init__(message)
        self.rc = rc
        self.extra = extra


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
    except (FileNotFoundError, ValueError):
        return default


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def audit(lay: Layout, event: str, **details: object) -> None:
    os.makedirs(lay.state, exist_ok=True)
    entry = {"time": time.time(), "event": event, "user": os.environ.get("USER", str(os.getuid())), **details}
    with open(lay.st("audit.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def link_target(link: str) -> str | None:
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def switch_link(link: str, target: str) -> None:
    """Point `link` at `target` atomically: a new symlink renamed over the old one."""
    tmp = f"{link}.{uuid.uuid4().hex}.new"
    os.symlink(target, tmp)
    os.replace(tmp, link)


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
    libc, libc_ver = platform.libc_ver()
    return {
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
        "current": link_target(lay.current),
        "previous": link_target(lay.previous),
        "failed": read_json(lay.st("failed.json"), {}),
        "lock": _lock_info(lay) if _lock_is_held(lay) else None,
        "device": read_json(lay.st("device.json"), {}),
        "systemd": has_systemd(),
        "uid": os.getuid(),
    }


# ---------------------------------------------------------------- lock
# The lock is an flock on state/lock held by a `hold` process that lives as long as the deploy's SSH
# session: when the session dies (link cut, host crash) sshd ends the process and the kernel frees
# the lock, so a lock never outlives its holder. A holder older than its ttl counts as stuck.
def _lock_info(lay: Layout) -> dict | None:
    info = read_json(lay.st("lock"))
    return info if isinstance(info, dict) else None


def _lock_is_held(lay: Layout) -> bool:
    import fcntl

    try:
        fd = os.open(lay.st("lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _try_flock(lay: Layout) -> int | None:
    import fcntl

    fd = os.open(lay.st("lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _end_stuck_holder(lay: Layout) -> None:
    held = _lock_info(lay) or {}
    if held.get("expires", float("inf")) < time.time() and held.get("pid"):
        audit(lay, "lock_expired", stale_owner=held.get("owner"), since=held.get("since"))
        with contextlib.suppress(OSError):
            os.kill(int(held["pid"]), signal.SIGTERM)
        time.sleep(0.5)


def cmd_hold(lay: Layout, args: argparse.Namespace) -> dict:
    """Take the device lock and keep it until stdin closes (the deploy's session ends)."""
    lay.ensure()
    fd = _try_flock(lay)
    if fd is None:
        _end_stuck_holder(lay)
        fd = _try_flock(lay)
    if fd is None:
        held = _lock_info(lay) or {}
        raise AgentError(
            "device is locked",
            RC_LOCKED,
            holder=held.get("owner"),
            since=held.get("since"),
            expires=held.get("expires"),
        )
    now = time.time()
    info = {
        "token": args.token,
        "owner": args.owner,
        "since": now,
        "expires": now + args.ttl,
        "pid": os.getpid(),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    print(json.dumps({"ok": True, "locked": True, "root": lay.root}), flush=True)
    while sys.stdin.buffer.read(4096):
        pass
    still = _lock_info(lay)
    if still and still.get("token") == args.token:
        os.ftruncate(fd, 0)
    os.close(fd)
    raise SystemExit(0)


def require_lock(lay: Layout, token: str | None) -> None:
    held = _lock_info(lay)
    if not held or held.get("token") != token or not _lock_is_held(lay):
        raise AgentError(
            "this deploy does not hold the device lock (it was lost)",
            RC_LOCKED,
            holder=(held or {}).get("owner"),
            since=(held or {}).get("since"),
        )


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
    stays on disk and `have` reports it, so the next run resumes from there.
    """
    require_lock(lay, args.token)
    stream = sys.stdin.buffer
    received = 0
    while line := stream.readline():
        hdr = json.loads(line)
        path = part_path(lay, check_sha(hdr["sha"]))
        offset, remaining = int(hdr["offset"]), int(hdr["size"])
        with open(path, "r+b" if offset else "wb") as f:
            if offset and f.seek(0, os.SEEK_END) != offset:
                raise AgentError(f"staged {hdr['sha'][:12]} is not {offset} bytes long; rerun", RC_VERIFY)
            while remaining:
                chunk = stream.read(min(_CHUNK, remaining))
                if not chunk:
                    return {"received": received, "complete": False}
                f.write(chunk)
                remaining -= len(chunk)
                received += len(chunk)
    return {"received": received, "complete": True}


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


def python_for(lay: Layout, release: str) -> str:
    """The interpreter for the runtime: a venv built from the bundle's wheels, else the configured one."""
    svc = read_json(lay.st("service.json"), {})
    configured = lay.python or (svc.get("python") if isinstance(svc, dict) else None)
    wheels_dir = os.path.join(release, "wheels")
    wheels = (
        sorted(n for n in os.listdir(wheels_dir) if n.endswith(".whl")) if os.path.isdir(wheels_dir) else []
    )
    if not wheels:
        return configured or sys.executable
    key = hashlib.sha256("\n".join(sha256_path(os.path.join(wheels_dir, w)) for w in wheels).encode())
    venv = os.path.join(lay.root, "venvs", key.hexdigest()[:16])
    py = os.path.join(venv, "bin", "python3")
    if not os.path.exists(py):
        tmp = f"{venv}.{uuid.uuid4().hex}.partial"
        subprocess.run([configured or sys.executable, "-m", "venv", tmp], check=True, capture_output=True)
        subprocess.run(
            [
                os.path.join(tmp, "bin", "python3"),
                "-m",
                "pip",
                "install",
                "--no-index",
                "--find-links",
                wheels_dir,
                *[os.path.join(wheels_dir, w) for w in wheels],
            ],
            check=True,
            capture_output=True,
        )
        os.rename(tmp, venv)  # venv scripts keep the temp path in shebangs; we only run bin/python3 -m
    return py


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


def service_pid(lay: Layout) -> int | None:
    info = read_json(lay.st("service.pid"))
    if isinstance(info, dict) and _pid_alive(int(info["pid"])):
        return int(info["pid"])
    return None


def service_stop(lay: Layout) -> None:
    if has_systemd() and os.getuid() == 0:
        subprocess.run(["systemctl", "stop", "llmos-edge"], capture_output=True)
        return
    pid = service_pid(lay)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.time() + 5
    while time.time() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lay.st("service.pid"))


def service_start(lay: Layout, version: str) -> None:
    release = os.path.join(lay.releases, version)
    if has_systemd() and os.getuid() == 0:
        # the unit runs <root>/current/bin/llmos-launch, which reads LLMOS_PYTHON from state/runtime.env
        write_atomic(lay.st("runtime.env"), f"LLMOS_PYTHON={python_for(lay, release)}\n".encode())
        unit = os.path.join(release, "systemd", "llmos-edge.service")
        shutil.copyfile(unit, "/etc/systemd/system/llmos-edge.service")
        for cmd in (["daemon-reload"], ["enable", "llmos-edge"], ["restart", "llmos-edge"]):
            subprocess.run(["systemctl", *cmd], check=True, capture_output=True)
        return
    py = python_for(lay, release)
    env = dict(os.environ, PYTHONPATH=os.path.join(release, "runtime"), LLMOS_RELEASE=version)
    with open(lay.st("service.log"), "ab") as log:
        log.write(f"--- llmos-agent: starting {version} at {time.ctime()}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [py, "-m", "llmos_runtime", "serve", "--config", "config/runtime.json"],
            cwd=release,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    write_atomic(lay.st("service.pid"), json.dumps({"pid": proc.pid, "version": version}).encode())


def wait_healthy(lay: Layout, version: str, timeout: float) -> str | None:
    """None when the runtime accepts connections, else why not."""
    host, port = runtime_endpoint(os.path.join(lay.releases, version))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not (has_systemd() and os.getuid() == 0) and service_pid(lay) is None:
            return "the runtime process exited"
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return None
        time.sleep(0.1)
    return f"the runtime did not listen on {host}:{port} within {timeout:.0f}s"


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
            [python_for(lay, release), "smoke/smoke.py"],
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


def log_tail(lay: Layout, lines: int) -> str:
    try:
        with open(lay.st("service.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * lines))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_and_check(lay: Layout, version: str, timeout: float) -> tuple[bool, str]:
    """Restart on `version` and smoke it; any failure (even building its venv) is a failed check."""
    service_stop(lay)
    try:
        service_start(lay, version)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return False, f"could not start {version}: {exc}\n{detail.decode(errors='replace')[-1500:]}"
    why = wait_healthy(lay, version, timeout)
    if why:
        return False, why
    return run_smoke(lay, version, timeout)


# ---------------------------------------------------------------- activate / rollback
def mark_failed(lay: Layout, version: str, reason: str) -> None:
    failed = read_json(lay.st("failed.json"), {})
    assert isinstance(failed, dict)
    failed[version] = {"time": time.time(), "reason": reason[-500:]}
    write_atomic(lay.st("failed.json"), json.dumps(failed, indent=2, sort_keys=True).encode())


def cmd_activate(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    version = args.version
    if not os.path.isdir(os.path.join(lay.releases, version)):
        raise AgentError(f"release {version} is not installed", RC_REFUSED)
    old = link_target(lay.current)
    switch_link(lay.current, os.path.join("releases", version))
    lay.python = args.python  # only kept (state/service.json) once the release proved itself
    ok, output = start_and_check(lay, version, args.timeout)
    lay.python = None
    if ok:
        if args.python:
            write_atomic(lay.st("service.json"), json.dumps({"python": args.python}).encode())
        if old and old != version:
            switch_link(lay.previous, os.path.join("releases", old))
        failed = read_json(lay.st("failed.json"), {})
        if isinstance(failed, dict) and failed.pop(version, None) is not None:
            write_atomic(lay.st("failed.json"), json.dumps(failed, indent=2, sort_keys=True).encode())
        if args.target:
            write_atomic(lay.st("device.json"), json.dumps({"target": args.target}).encode())
        audit(lay, "activate", version=version, previous=old)
        return {"active": version, "previous": old, "smoke": output[-1000:]}
    excerpt = log_tail(lay, 40)
    mark_failed(lay, version, output)
    restored = _restore(lay, old, args.timeout)
    audit(lay, "smoke_failed", version=version, restored=old if restored else None)
    raise AgentError(
        f"release {version} failed its smoke test",
        RC_SMOKE,
        smoke=output[-2000:],
        log=excerpt,
        restored=old if restored else None,
    )


def _restore(lay: Layout, old: str | None, timeout: float) -> bool:
    if not old:
        service_stop(lay)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lay.current)
        return False
    switch_link(lay.current, os.path.join("releases", old))
    ok, _ = start_and_check(lay, old, timeout)
    return ok


def cmd_rollback(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    cur, target = link_target(lay.current), args.to or link_target(lay.previous)
    if not target or not os.path.isdir(os.path.join(lay.releases, target)):
        raise AgentError("there is no previous release to roll back to", RC_REFUSED)
    switch_link(lay.current, os.path.join("releases", target))
    ok, output = start_and_check(lay, target, args.timeout)
    if cur and cur != target:
        switch_link(lay.previous, os.path.join("releases", cur))
    audit(lay, "rollback", version=target, from_version=cur, healthy=ok)
    if not ok:
        raise AgentError(
            f"rolled back to {target} but it is not healthy", RC_SMOKE, smoke=output, log=log_tail(lay, 40)
        )
    return {"active": target, "previous": cur}


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
    cur = link_target(lay.current)
    pid = service_pid(lay)
    healthy = None
    if cur and os.path.isdir(os.path.join(lay.releases, cur)):
        host, port = runtime_endpoint(os.path.join(lay.releases, cur))
        try:
            with socket.create_connection((host, port), timeout=1):
                healthy = True
        except OSError:
            healthy = False
    return {
        "current": cur,
        "previous": link_target(lay.previous),
        "pid": pid,
        "listening": healthy,
        "failed": read_json(lay.st("failed.json"), {}),
        "lock": _lock_info(lay) if _lock_is_held(lay) else None,
        "releases": [r["version"] for r in _releases(lay)],
        "hostname": socket.gethostname(),
    }


def cmd_releases(lay: Layout, args: argparse.Namespace) -> dict:
    rels = _releases(lay)
    keep = {link_target(lay.current), link_target(lay.previous)}
    removed: list[str] = []
    if args.keep is not None:
        require_lock(lay, args.token)
        newest = {r["version"] for r in rels[-args.keep :]} if args.keep > 0 else set()
        for r in rels:
            if r["version"] not in keep and r["version"] not in newest:
                shutil.rmtree(os.path.join(lay.releases, r["version"]))
                removed.append(r["version"])
        freed = _gc_store(lay)
        audit(lay, "prune", removed=removed, keep=args.keep, store_freed=freed)
    return {"releases": [dict(r, current=r["version"] in keep) for r in _releases(lay)], "removed": removed}


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
    "clean-staging": cmd_clean_staging,
    "activate": cmd_activate,
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
    p.add_argument("--version")
    p.add_argument("--to")
    p.add_argument("--target")
    p.add_argument("--python")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--keep", type=int)
    p.add_argument("--lines", type=int, default=50)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lay = Layout(args.root)
    try:
        result = COMMANDS[args.command](lay, args)
        print(json.dumps({"ok": True, **result}, sort_keys=True, default=str))
        return 0
    except AgentError as exc:
        print(json.dumps({"ok": False, "error": str(exc), **exc.extra}, sort_keys=True, default=str))
        return exc.rc
    except Exception as exc:  # report device-side failures as JSON, the host maps them to DeviceError
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, sort_keys=True))
        return 1


if __name__ == "__main__":
    sys.exit(main())
