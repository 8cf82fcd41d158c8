"""The runtime's interpreter: a release's offline wheels installed into venvs/<key>/, once per wheel set."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

from .base import (
    _LOW_DISK,
    AgentError,
    Layout,
    disk_free,
    is_resource_error,
    read_json,
    resource_failure,
    resource_text,
    sha256_path,
    switch_link,
    write_atomic,
)


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


def _wheels_need(release: str) -> int:
    """A venv takes about three times its wheels' size once unpacked (plus pip itself)."""
    wdir = os.path.join(release, "wheels")
    names = os.listdir(wdir) if os.path.isdir(wdir) else []
    return 3 * sum(os.path.getsize(os.path.join(wdir, n)) for n in names) + 30_000_000


