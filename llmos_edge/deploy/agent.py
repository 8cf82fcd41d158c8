#!/usr/bin/env python3
"""llmos-agent: the device side of `llmos-edge deploy` (python3 stdlib only, one file).

The host runs it over SSH (`python3 -c <bootstrap> CMD ...`, so probing changes nothing on the device)
and ships it in every bundle as bin/llmos-agent. Every command prints one JSON object on stdout.
Layout under ROOT: store/sha256/<hex>, staging/, releases/<version>/, current, previous, state/,
venvs/<key>/ (a release's offline wheels installed once per wheel set, by `prepare`).
Services: the runtime, and for ESP32 host bundles the serial bridge (systemd units, or two
pidfile-managed processes when there is no systemd).
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
import pwd
import re
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


def _venv_step(argv: list[str], what: str, base: str, timeout: float = 1800) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, env=_clean_pip_env(), timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _venv_error(what, base, str(exc)) from None
    if proc.returncode != 0:
        raise _venv_error(what, base, (proc.stdout + proc.stderr).decode(errors="replace"))


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
        return py, False
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):  # leftovers of builds that were cut off (we hold the device lock)
        if name.endswith(".partial"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    tmp = os.path.join(parent, f".{key}.{uuid.uuid4().hex}.partial")
    try:
        _venv_step([base, "-m", "venv", tmp], "create a venv for the offline wheels", base)
        wdir = os.path.join(release, "wheels")
        pip = [os.path.join(tmp, "bin", "python3"), "-m", "pip", "install", "--no-index", "--no-cache-dir"]
        pip += ["--find-links", wdir, *[os.path.join(wdir, n) for n in wheels]]
        _venv_step(pip, "install the bundle's offline wheels", base)
        marker = dict(ident, wheels=wheels, built=time.time())
        write_atomic(os.path.join(tmp, VENV_MARKER), json.dumps(marker, sort_keys=True).encode())
        if os.path.isdir(venv):  # an unfinished venv without a marker: never used, replace it
            shutil.rmtree(venv)
        os.rename(tmp, venv)  # scripts keep the temp path in their shebangs; we only run bin/python3 -m
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return py, True


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
    """The live process recorded in state/<name>.pid (service = the runtime, bridge = ESP32 bridge)."""
    info = read_json(lay.st(f"{name}.pid"))
    if isinstance(info, dict) and _pid_alive(int(info["pid"])):
        return int(info["pid"])
    return None


def service_pid(lay: Layout) -> int | None:
    return pidfile_pid(lay, "service")


def _systemd_mode() -> bool:
    return has_systemd() and os.getuid() == 0


def _stop_pidfile(lay: Layout, name: str) -> None:
    pid = pidfile_pid(lay, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
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
    write_atomic(lay.st(f"{name}.pid"), json.dumps({"pid": proc.pid, "version": version}).encode())


def service_stop(lay: Layout) -> None:
    if _systemd_mode():
        subprocess.run(["systemctl", "stop", "llmos-bridge"], capture_output=True)
        subprocess.run(["systemctl", "stop", "llmos-edge"], capture_output=True)
        return
    _stop_pidfile(lay, "bridge")
    _stop_pidfile(lay, "service")


def service_start(lay: Layout, version: str) -> None:
    release = os.path.join(lay.releases, version)
    py = python_for(lay, release)
    if _systemd_mode():
        # the unit runs <root>/current/bin/llmos-launch, which reads LLMOS_PYTHON from state/runtime.env
        write_atomic(lay.st("runtime.env"), f"LLMOS_PYTHON={py}\n".encode())
        _prepare_service_user(lay, release)
        _systemd_install(release, "llmos-edge", required=True)
        _systemd_install(release, "llmos-bridge")
        return
    env = dict(os.environ, PYTHONPATH=os.path.join(release, "runtime"), LLMOS_RELEASE=version)
    argv = [py, "-m", "llmos_runtime", "serve", "--config", "config/runtime.json"]
    _start_pidfile(lay, "service", version, argv, release, env)
    if has_bridge(release):
        bargv, benv = bridge_command(lay, release)
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
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _systemd_mode() and service_pid(lay) is None:
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


def start_and_check(lay: Layout, version: str, timeout: float) -> tuple[bool, str]:
    """Restart on `version` and smoke it; any failure (even building its venv) is a failed check."""
    service_stop(lay)
    try:
        service_start(lay, version)
    except AgentError as exc:
        return False, f"could not start {version}: {exc}"
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return False, f"could not start {version}: {exc}\n{detail.decode(errors='replace')[-1500:]}"
    why = wait_healthy(lay, version, timeout)
    if why:
        return False, why
    ok, output = run_smoke(lay, version, timeout)
    if ok and has_bridge(os.path.join(lay.releases, version)) and not bridge_running(lay):
        return False, f"the ESP32 bridge of {version} exited:\n{log_tail(lay, 20, 'bridge')}"
    return ok, output


def cmd_prepare(lay: Layout, args: argparse.Namespace) -> dict:
    """Build (or reuse) the venv of an installed release's offline wheels, before anything is stopped.

    A failure leaves the running release untouched and marks this version failed.
    """
    require_lock(lay, args.token)
    version = args.version
    release = os.path.join(lay.releases, version)
    if not version or not safe_relpath(version) or "/" in version or not os.path.isdir(release):
        raise AgentError(f"release {version} is not installed", RC_REFUSED)
    base = args.python or _configured_python(lay) or sys.executable
    t0 = time.time()
    try:
        venv, built = ensure_venv(lay, release, base)
    except AgentError as exc:
        mark_failed(lay, version, f"offline wheels: {exc}")
        audit(lay, "venv_failed", version=version, error=str(exc)[-500:])
        exc.extra["active"] = link_target(lay.current)
        raise
    if built:
        audit(lay, "venv_built", version=version, venv=venv, seconds=round(time.time() - t0, 1))
    return {"venv": venv, "built": built, "seconds": round(time.time() - t0, 2)}


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
        scaled = {"latency_scale": lay.latency_scale} if lay.latency_scale != 1 else {}
        audit(lay, "activate", version=version, previous=old, **scaled)
        return {"active": version, "previous": old, "smoke": output[-4000:]}
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
        "bridge_pid": pidfile_pid(lay, "bridge"),
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
        venvs = _gc_venvs(lay)
        audit(lay, "prune", removed=removed, keep=args.keep, store_freed=freed, venvs_removed=venvs)
    return {"releases": [dict(r, current=r["version"] in keep) for r in _releases(lay)], "removed": removed}


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
    p.add_argument("--latency-scale", type=float, default=1.0)
    p.add_argument("--keep", type=int)
    p.add_argument("--lines", type=int, default=50)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lay = Layout(args.root)
    lay.latency_scale = args.latency_scale
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
