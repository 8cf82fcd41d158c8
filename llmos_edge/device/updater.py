"""Device-side updater: a bundle image from a Mender artifact or a RAUC bundle goes through the agent.

Packed into one stdlib-only python3 file (`pack.updater_script()`) with two front ends (every bundle
carries it as bin/llmos-mender-module):
- Mender update module `llmos-bundle`: install as /usr/share/mender/modules/v3/llmos-bundle; Mender runs
  `llmos-bundle STATE WORKDIR` for each state.
- RAUC install hook: `export_rauc` puts the packed file in the RAUC bundle as its hook with `hooks=install` on
  `[image.llmos]`; RAUC runs `<hook> slot-install` with RAUC_IMAGE_NAME (the image in the mounted bundle)
  and RAUC_BUNDLE_MOUNT_POINT (where llmos-ota.json names the manifest hash).

Install does what `llmos-edge deploy` does over SSH, through the same agent commands: lock,
content-addressed store, verified install, offline-wheel venv, activate + on-device smoke. A failing
smoke is rolled back by the agent before Mender/RAUC hears of it; Mender's ArtifactRollback (after a
failed install, or `mender rollback`) returns to the release that served before this artifact.

Trust: Mender checks the artifact signature (ArtifactVerifyKey), RAUC the bundle's CMS signature against
its keyring. This file checks the bundle's manifest against the hash the signed artifact/bundle names,
runs only an agent whose hash the manifest names, and the agent checks every file's sha256 before it is
installed. Nothing from the tar is written to disk by path: files are streamed into the store by hash.

Settings: $LLMOS_OTA_CONFIG or $LLMOS_MENDER_CONFIG, else /etc/llmos-edge/ota.json, else
/etc/llmos-edge/mender.json; all optional:
  {"root": "/opt/llmos", "smoke_timeout": 300, "python": null, "latency_scale": 1}
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

from . import protocol as P

CONFIGS = ("/etc/llmos-edge/ota.json", "/etc/llmos-edge/mender.json")  # the first that exists
DEFAULTS: dict[str, Any] = {
    "root": "/opt/llmos",
    "smoke_timeout": 300.0,
    "python": None,
    "latency_scale": 1.0,
}
STATE_FILE = "llmos-state.json"  # in Mender's per-update tmp/: what ArtifactInstall changed
RAUC_META = P.RAUC_META
_CHUNK = 1 << 20


class ModuleError(Exception):
    """A refusal or failure the OTA client should report; the device keeps (or is back on) its release."""


def log(msg: str) -> None:
    print(f"llmos-bundle: {msg}", file=sys.stderr, flush=True)


def config_path() -> str:
    """$LLMOS_OTA_CONFIG, then $LLMOS_MENDER_CONFIG (older devices), then the first default that exists."""
    for var in ("LLMOS_OTA_CONFIG", "LLMOS_MENDER_CONFIG"):
        if os.environ.get(var):
            return os.environ[var]
    return next((c for c in CONFIGS if os.path.exists(c)), CONFIGS[0])


def settings() -> dict[str, Any]:
    path = config_path()
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
        if info.name in ("manifest.json", "manifest.sig", P.AGENT_FILE):
            found[info.name] = f.read()
    if "manifest.json" not in found or P.AGENT_FILE not in found:
        raise ModuleError("the artifact's payload is not an llmos-edge bundle (no manifest.json or agent)")
    sig = found.get("manifest.sig")
    return found["manifest.json"], None if sig is None else sig.decode(), found[P.AGENT_FILE]


def check_manifest(raw: bytes, want: str | None, agent: bytes) -> dict[str, Any]:
    """The manifest must be the one the signed artifact/bundle names; the agent the one it lists."""
    got = hashlib.sha256(raw).hexdigest()
    if want and want != got:
        raise ModuleError(f"manifest.json hash {got[:16]}… is not the artifact's {str(want)[:16]}…")
    manifest: dict[str, Any] = json.loads(raw)
    entry = manifest.get("files", {}).get(P.AGENT_FILE, {})
    if entry.get("sha256") != hashlib.sha256(agent).hexdigest():
        raise ModuleError(f"{P.AGENT_FILE} does not match its manifest entry; refusing to run it")
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

    def __init__(self, agent: Agent, token: str, owner: str) -> None:
        self.proc = subprocess.Popen(
            agent.argv(P.HOLD, "--token", token, "--owner", owner),
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
    present = set(agent.call(P.HAVE, data={"files": blobs})["present"])
    todo = {sha: size for sha, size in blobs.items() if sha not in present}
    if not todo:
        return 0
    proc = subprocess.Popen(
        agent.argv(P.RECEIVE, "--token", token),
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
    Agent._answer(P.RECEIVE, proc.returncode, out, err)
    res = agent.call(P.COMMIT, "--token", token, data={"files": todo})
    if res["bad"] or res["missing"]:
        raise ModuleError(
            f"{len(res['bad']) + len(res['missing'])} file(s) of the bundle failed verification"
        )
    return sum(todo.values())


# ---------------------------------------------------------------- install (both front ends)
def install_image(image: str, want: str | None, state_dir: str, cfg: dict[str, Any], via: str) -> str:
    """Install `image` through its own agent; `want` = manifest sha256 from the signed OTA wrapper."""
    raw, sig, agent_bytes = read_head(image)
    manifest = check_manifest(raw, want, agent_bytes)
    version = str(manifest["bundle_version"])
    agent_path = os.path.join(state_dir, "llmos-agent")
    os.makedirs(state_dir, exist_ok=True)
    with open(agent_path, "wb") as f:
        f.write(agent_bytes)
    agent = Agent(agent_path, cfg["root"])
    before = agent.call(P.STATUS).get("current")
    token = hashlib.sha256(os.urandom(32)).hexdigest()[:32]
    lock = Lock(agent, token, via)
    try:
        sent = send_blobs(agent, image, manifest, token)
        data = {"manifest": raw.decode(), "signature": sig, "audit": {"via": via, "bytes": sent}}
        agent.call(P.INSTALL, "--token", token, "--version", version, data=data)
        agent.call(P.CLEAN_STAGING, "--token", token)
        py = ["--python", cfg["python"]] if cfg["python"] else []
        agent.call(P.PREPARE, "--token", token, "--version", version, *py, timeout=3600)
        _remember(state_dir, {"version": version, "previous": before})
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
        agent.call(P.ACTIVATE, *activate, timeout=float(cfg["smoke_timeout"]) * 3 + 60)
    except AgentRefused as exc:
        restored = exc.res.get("restored")
        tail = str(exc.res.get("smoke") or "")[-1500:]
        raise ModuleError(f"{exc}; now serving {restored or before or 'nothing'}\n{tail}") from exc
    finally:
        lock.release()
    log(f"{version} is active (previous: {before})")
    return version


# ---------------------------------------------------------------- Mender states
def artifact_install(workdir: str, cfg: dict[str, Any]) -> None:
    want = artifact_meta(workdir).get("manifest_sha256")
    state_dir = os.path.join(workdir, "tmp")
    install_image(payload_image(workdir), str(want) if want else None, state_dir, cfg, "mender")


def _remember(state_dir: str, state: dict[str, Any]) -> None:
    with open(os.path.join(state_dir, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(state, f)


def artifact_rollback(workdir: str, cfg: dict[str, Any]) -> None:
    try:
        with open(os.path.join(workdir, "tmp", STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        log("nothing was installed by this update; nothing to roll back")
        return
    installed = os.path.join(cfg["root"], P.AGENT_FILE)
    agent = Agent(
        installed if os.path.isfile(installed) else os.path.join(workdir, "tmp", "llmos-agent"), cfg["root"]
    )
    current = agent.call(P.STATUS).get("current")
    if current != state["version"]:
        log(f"{state['version']} is not active (serving {current}); nothing to roll back")
        return
    if not state.get("previous"):
        log(f"{current} was the first release and passed its smoke test; keeping it rather than none")
        return
    token = hashlib.sha256(os.urandom(32)).hexdigest()[:32]
    lock = Lock(agent, token, "mender")
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


# ---------------------------------------------------------------- RAUC install hook
def rauc_slot_install(env: Mapping[str, str], cfg: dict[str, Any]) -> None:
    """RAUC's `slot-install` for the llmos slot: the image lies in the mounted, verified bundle."""
    image, mount = env.get("RAUC_IMAGE_NAME"), env.get("RAUC_BUNDLE_MOUNT_POINT")
    if not image or not mount:
        raise ModuleError("slot-install needs RAUC_IMAGE_NAME and RAUC_BUNDLE_MOUNT_POINT (run by RAUC)")
    try:
        with open(os.path.join(mount, RAUC_META), encoding="utf-8") as f:
            want = json.load(f)["manifest_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModuleError(f"the RAUC bundle has no readable {RAUC_META} ({exc}); export it again") from exc
    with tempfile.TemporaryDirectory(prefix="llmos-rauc-") as state_dir:
        install_image(image, str(want), state_dir, cfg, "rauc")


RAUC_HOOKS = ("slot-install",)  # the only hook export_rauc declares; others are a no-op
ANSWERS = {"SupportsRollback": "Yes", "NeedsArtifactReboot": "No"}


def main(argv: list[str]) -> int:
    if argv and argv[0].startswith("slot-"):
        return rauc_main(argv[0])
    if len(argv) < 2:
        print("usage: llmos-bundle STATE WORKDIR (run by the Mender client) | slot-install (by RAUC)",
              file=sys.stderr)
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


def rauc_main(hook: str) -> int:
    """A non-zero exit makes `rauc install` fail; the agent has already restored the last release."""
    if hook not in RAUC_HOOKS:
        return 0
    try:
        rauc_slot_install(os.environ, settings())
    except (ModuleError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        log(f"{hook} failed: {exc}")
        return 1
    return 0


