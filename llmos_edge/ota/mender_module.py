#!/usr/bin/env python3
"""Mender update module `llmos-bundle`: a bundle from a Mender artifact goes through the device agent.

Install on the device as /usr/share/mender/modules/v3/llmos-bundle (python3 stdlib only; every bundle
carries a copy as bin/llmos-mender-module). Mender runs `llmos-bundle STATE WORKDIR` for each state.

ArtifactInstall does what `llmos-edge deploy` does over SSH, through the same agent commands: lock,
content-addressed store, verified install, offline-wheel venv, activate + on-device smoke. A failing
smoke is rolled back by the agent before Mender hears of it; ArtifactRollback (after a failed install,
or `mender rollback`) returns to the release that served before this artifact.

Trust: Mender checks the artifact signature (ArtifactVerifyKey in mender.conf). This module checks the
bundle's manifest against the hash in the artifact's meta-data, runs only an agent whose hash the
manifest names, and the agent checks every file's sha256 before it is installed. Nothing from the tar
is written to disk by path: files are streamed into the store under their hashes.

Settings: /etc/llmos-edge/mender.json (or $LLMOS_MENDER_CONFIG), all optional:
  {"root": "/opt/llmos", "smoke_timeout": 300, "python": null, "latency_scale": 1}
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from typing import IO, Any

CONFIG = "/etc/llmos-edge/mender.json"
DEFAULTS: dict[str, Any] = {
    "root": "/opt/llmos",
    "smoke_timeout": 300.0,
    "python": None,
    "latency_scale": 1.0,
}
STATE_FILE = "llmos-state.json"  # in Mender's per-update tmp/: what ArtifactInstall changed
_CHUNK = 1 << 20


class ModuleError(Exception):
    """A refusal or failure Mender should report; the device keeps (or is back on) its last release."""


def log(msg: str) -> None:
    print(f"llmos-bundle: {msg}", file=sys.stderr, flush=True)


def settings() -> dict[str, Any]:
    path = os.environ.get("LLMOS_MENDER_CONFIG", CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            user = json.load(f)
    except FileNotFoundError:
        user = {}
    except (OSError, ValueError) as exc:
        raise ModuleError(f"cannot read {path}: {exc}") from exc
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ModuleError(f"{path}: unknown setting(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **user}


# ---------------------------------------------------------------- the artifact's payload
def payload_image(workdir: str) -> str:
    files = os.path.join(workdir, "files")
    images = sorted(n for n in os.listdir(files) if n.endswith(".tar.gz")) if os.path.isdir(files) else []
    if len(images) != 1:
        raise ModuleError(f"expected one bundle image (*.tar.gz) in the artifact, found {images}")
    return os.path.join(files, images[0])


def artifact_meta(workdir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(workdir, "header", "meta-data"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _members(image: str) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    with tarfile.open(image, "r|gz") as tar:
        for info in tar:
            f = tar.extractfile(info) if info.isreg() else None
            if f is not None:
                yield info, f


def read_head(image: str) -> tuple[bytes, str | None, bytes]:
    """(manifest.json bytes, manifest.sig text or None, bin/llmos-agent bytes), one pass over the image."""
    found: dict[str, bytes] = {}
    for info, f in _members(image):
        if info.name in ("manifest.json", "manifest.sig", "bin/llmos-agent"):
            found[info.name] = f.read()
    if "manifest.json" not in found or "bin/llmos-agent" not in found:
        raise ModuleError("the artifact's payload is not an llmos-edge bundle (no manifest.json or agent)")
    sig = found.get("manifest.sig")
    return found["manifest.json"], None if sig is None else sig.decode(), found["bin/llmos-agent"]


def check_manifest(raw: bytes, meta: dict[str, Any], agent: bytes) -> dict[str, Any]:
    want = meta.get("manifest_sha256")
    got = hashlib.sha256(raw).hexdigest()
    if want and want != got:
        raise ModuleError(f"manifest.json hash {got[:16]}… is not the artifact's {str(want)[:16]}…")
    manifest: dict[str, Any] = json.loads(raw)
    entry = manifest.get("files", {}).get("bin/llmos-agent", {})
    if entry.get("sha256") != hashlib.sha256(agent).hexdigest():
        raise ModuleError("bin/llmos-agent does not match its manifest entry; refusing to run it")
    return manifest


# ---------------------------------------------------------------- the device agent
class Agent:
    def __init__(self, path: str, root: str) -> None:
        self.path, self.root = path, root

    def argv(self, command: str, *args: str) -> list[str]:
        return [sys.executable, self.path, command, "--root", self.root, *args]

    def call(self, command: str, *args: str, data: Any = None, timeout: float = 600) -> dict[str, Any]:
        stdin = None if data is None else json.dumps(data).encode()
        proc = subprocess.run(self.argv(command, *args), input=stdin, capture_output=True, timeout=timeout)
        return self._answer(command, proc.returncode, proc.stdout, proc.stderr)

    @staticmethod
    def _answer(command: str, rc: int, out: bytes, err: bytes) -> dict[str, Any]:
        try:
            res: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ModuleError(f"agent {command} gave no answer (exit {rc}): {err.decode()[-1500:]}") from None
        if rc != 0 or not res.get("ok"):
            res.setdefault("rc", rc)
            raise AgentRefused(command, res)
        return res


class AgentRefused(ModuleError):
    def __init__(self, command: str, res: dict[str, Any]) -> None:
        super().__init__(f"agent {command}: {res.get('error', 'failed')}")
        self.res = res


class Lock:
    """The agent's device lock, held while `hold` reads its stdin: the same lock SSH deploys take."""

    def __init__(self, agent: Agent, token: str) -> None:
        self.proc = subprocess.Popen(
            agent.argv("hold", "--token", token, "--owner", "mender"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise ModuleError(f"could not take the device lock (agent exit {self.proc.returncode})")
        res = json.loads(line)
        if not res.get("ok"):
            self.proc.wait()
            raise ModuleError(f"device is locked by {res.get('holder')}; retry when that deploy ends")

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def send_blobs(agent: Agent, image: str, manifest: dict[str, Any], token: str) -> int:
    """Stream the blobs the store lacks into staging, then have the agent verify and keep them."""
    blobs = {e["sha256"]: int(e["size"]) for e in manifest["files"].values()}
    present = set(agent.call("have", data={"files": blobs})["present"])
    todo = {sha: size for sha, size in blobs.items() if sha not in present}
    if not todo:
        return 0
    proc = subprocess.Popen(
        agent.argv("receive", "--token", token),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    sent: set[str] = set()
    for info, f in _members(image):
        entry = manifest["files"].get(info.name)
        if not entry or entry["sha256"] not in todo or entry["sha256"] in sent:
            continue
        proc.stdin.write(
            json.dumps({"sha": entry["sha256"], "offset": 0, "size": info.size}).encode() + b"\n"
        )
        while chunk := f.read(_CHUNK):
            proc.stdin.write(chunk)
        sent.add(entry["sha256"])
    out, err = proc.communicate()
    Agent._answer("receive", proc.returncode, out, err)
    res = agent.call("commit", "--token", token, data={"files": todo})
    if res["bad"] or res["missing"]:
        raise ModuleError(
            f"{len(res['bad']) + len(res['missing'])} file(s) of the bundle failed verification"
        )
    return sum(todo.values())


# ---------------------------------------------------------------- states
def artifact_install(workdir: str, cfg: dict[str, Any]) -> None:
    image = payload_image(workdir)
    raw, sig, agent_bytes = read_head(image)
    manifest = check_manifest(raw, artifact_meta(workdir), agent_bytes)
    version = str(manifest["bundle_version"])
    agent_path = os.path.join(workdir, "tmp", "llmos-agent")
    os.makedirs(os.path.dirname(agent_path), exist_ok=True)
    with open(agent_path, "wb") as f:
        f.write(agent_bytes)
    agent = Agent(agent_path, cfg["root"])
    before = agent.call("status").get("current")
    token = hashlib.sha256(os.urandom(32)).hexdigest()[:32]
    lock = Lock(agent, token)
    try:
        sent = send_blobs(agent, image, manifest, token)
        data = {"manifest": raw.decode(), "signature": sig, "audit": {"via": "mender", "bytes": sent}}
        agent.call("install", "--token", token, "--version", version, data=data)
        agent.call("clean-staging", "--token", token)
        py = ["--python", cfg["python"]] if cfg["python"] else []
        agent.call("prepare", "--token", token, "--version", version, *py, timeout=3600)
        _remember(workdir, {"version": version, "previous": before})
        activate = [
            "--token",
            token,
            "--version",
            version,
            "--timeout",
            str(cfg["smoke_timeout"]),
            *py,
            "--target",
            str(manifest.get("target", "")),
            "--latency-scale",
            str(cfg["latency_scale"]),
        ]
        agent.call("activate", *activate, timeout=float(cfg["smoke_timeout"]) * 3 + 60)
    except AgentRefused as exc:
        restored = exc.res.get("restored")
        tail = str(exc.res.get("smoke") or "")[-1500:]
        raise ModuleError(f"{exc}; now serving {restored or before or 'nothing'}\n{tail}") from exc
    finally:
        lock.release()
    log(f"{version} is active (previous: {before})")


def _remember(workdir: str, state: dict[str, Any]) -> None:
    with open(os.path.join(workdir, "tmp", STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(state, f)


def artifact_rollback(workdir: str, cfg: dict[str, Any]) -> None:
    try:
        with open(os.path.join(workdir, "tmp", STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        log("nothing was installed by this update; nothing to roll back")
        return
    installed = os.path.join(cfg["root"], "bin", "llmos-agent")
    agent = Agent(
        installed if os.path.isfile(installed) else os.path.join(workdir, "tmp", "llmos-agent"), cfg["root"]
    )
    current = agent.call("status").get("current")
    if current != state["version"]:
        log(f"{state['version']} is not active (serving {current}); nothing to roll back")
        return
    if not state.get("previous"):
        log(f"{current} was the first release and passed its smoke test; keeping it rather than none")
        return
    token = hashlib.sha256(os.urandom(32)).hexdigest()[:32]
    lock = Lock(agent, token)
    try:
        agent.call(
            "rollback",
            "--token",
            token,
            "--to",
            state["previous"],
            "--timeout",
            str(cfg["smoke_timeout"]),
            timeout=float(cfg["smoke_timeout"]) * 3 + 60,
        )
    finally:
        lock.release()
    log(f"rolled back to {state['previous']}")


ANSWERS = {"SupportsRollback": "Yes", "NeedsArtifactReboot": "No"}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: llmos-bundle STATE WORKDIR (run by the Mender client)", file=sys.stderr)
        return 2
    state, workdir = argv[0], argv[1]
    if state in ANSWERS:
        print(ANSWERS[state])
        return 0
    try:
        if state == "ArtifactInstall":
            artifact_install(workdir, settings())
        elif state == "ArtifactRollback":
            artifact_rollback(workdir, settings())
    except (ModuleError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        log(f"{state} failed: {exc}")
        return 1
    return 0  # Download (Mender stores the payload), ArtifactCommit, Cleanup, ...: nothing to do


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
