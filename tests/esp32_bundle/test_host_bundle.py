"""The host half of an esp32s3-host-offload bundle: contents, signature, self-contained bridge, and a
prompt from the real C protocol client through the bundle's bridge and runtime over a socat pty pair."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult, verify_bundle
from llmos_edge.errors import CheckFailed
from tests.esp32.conftest import PtyPair

from .conftest import clean_env, free_port, stop

BRIDGE_FILES = {"__init__.py", "__main__.py", "_errors.py", "_standalone_errors.py", "bridge.py",
                "ports.py", "protocol.py"}
IDF_NAMES = {"CMakeLists.txt", "sdkconfig.defaults", "partitions.csv", "llmos_config.h", "main.c"}


def test_host_bundle_is_linux_service_plus_bridge(host_bundle: BundleResult) -> None:
    root = host_bundle.folder
    files = set(host_bundle.manifest["files"])
    for rel in ("config/runtime.json", "bin/llmos-launch", "bin/llmos-agent", "systemd/llmos-edge.service",
                "smoke/smoke.py", "smoke/golden.json", "runtime/llmos_runtime/__main__.py",
                "bin/llmos-bridge", "systemd/llmos-bridge.service"):
        assert rel in files, rel
    assert {p.name for p in (root / "bridge" / "llmos_bridge").iterdir()} == BRIDGE_FILES
    assert {f"bridge/llmos_bridge/{n}" for n in BRIDGE_FILES} <= files
    assert os.stat(root / "bin" / "llmos-bridge").st_mode & stat.S_IXUSR
    # the manifest names the esp32 system; platform and limits are the host's (rpi5)
    m = host_bundle.manifest
    assert m["target"] == "esp32s3-host-offload" and m["bundle_kind"] == "esp32s3-host-offload"
    assert m["platform"]["arch"] == "aarch64"
    assert "MemoryMax=5120M" in (root / "systemd" / "llmos-edge.service").read_text()


def test_no_esp_idf_files_in_host_bundle(host_bundle: BundleResult) -> None:
    files = host_bundle.manifest["files"]
    assert not [f for f in files if Path(f).name in IDF_NAMES or f.endswith((".c", ".h", ".j2"))]
    assert not [f for f in files if f.split("/")[0] in ("main", "host", "firmware")]


def test_bridge_unit_has_port_baud_and_runtime_url(host_bundle: BundleResult) -> None:
    root = host_bundle.folder
    unit = (root / "systemd" / "llmos-bridge.service").read_text()
    cfg = json.loads((root / "config" / "runtime.json").read_text())
    assert "Environment=LLMOS_BRIDGE_PORT=/dev/ttyACM0" in unit  # esp32s3 native USB
    assert "Environment=LLMOS_BRIDGE_BAUD=921600" in unit  # targets/esp32s3-host-offload.toml [esp32]
    assert f"--runtime http://127.0.0.1:{cfg['port']} " in unit
    assert "ExecStart=/opt/llmos/current/bin/llmos-bridge --port ${LLMOS_BRIDGE_PORT} " \
           "--baud ${LLMOS_BRIDGE_BAUD}" in unit
    assert "EnvironmentFile=-/opt/llmos/state/bridge.env" in unit
    assert "SupplementaryGroups=dialout" in unit and "User=llmos" in unit
    assert "llmos_edge" not in unit and "{{" not in unit


def test_signed_host_bundle_verifies_and_a_changed_bridge_is_caught(
    host_bundle: BundleResult, signing_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    pub = signing_keys[1]
    m = verify_bundle(host_bundle.folder, pub)
    assert m.raw["target"] == "esp32s3-host-offload" and m.signed_by is not None
    verify_bundle(host_bundle.image, pub)
    copy = tmp_path / "copy"
    shutil.copytree(host_bundle.folder, copy)
    with (copy / "bridge" / "llmos_bridge" / "bridge.py").open("a") as f:
        f.write("# changed\n")
    with pytest.raises(CheckFailed, match=r"bridge/llmos_bridge/bridge\.py"):
        verify_bundle(copy, pub)


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import node, with whether it sits in a `try:` whose handler catches ImportError."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers
        ):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return [(n, id(n) in guarded) for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_bridge_copy_imports_only_itself_stdlib_and_pyserial(host_bundle: BundleResult) -> None:
    pkg = host_bundle.folder / "bridge" / "llmos_bridge"
    allowed = set(sys.stdlib_module_names) | {"serial", "__future__"}
    for path in sorted(pkg.glob("*.py")):
        for node, guarded in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module is None or (pkg / f"{node.module}.py").is_file(), (path.name, node.module)
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                assert guarded, f"{path.name}: parent-package import outside an ImportError fallback"
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] in allowed, (path.name, node.module)
            else:
                names = [a.name for a in node.names]
                assert all(n.split(".")[0] in allowed for n in names), (path.name, names)


def test_bare_host_python_has_no_llmos_edge(bare_venv: Path) -> None:
    """The interpreter the bridge runs under below cannot reach this project at all."""
    r = subprocess.run([str(bare_venv / "bin" / "python3"), "-c", "import llmos_edge"],
                       env=clean_env(), cwd="/", capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'llmos_edge'" in r.stderr


def _start_bridge(bundle: Path, venv: Path, port: Path, url: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = clean_env(LLMOS_VENV=str(venv), LLMOS_EDGE_LOCK_DIR=str(tmp / "locks"))
    return subprocess.Popen([str(bundle / "bin" / "llmos-bridge"), "--port", str(port), "--runtime", url,
                             "--timeout", "60", "--max-tokens", "12"],
                            env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_log(proc: subprocess.Popen[bytes], needle: bytes, seconds: float) -> bytes:
    """Read the process's stderr until `needle` shows up; return what was read."""
    import selectors

    assert proc.stderr is not None
    seen = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while needle not in seen and time.monotonic() < deadline and proc.poll() is None:
        if sel.select(0.2):
            seen += os.read(proc.stderr.fileno(), 4096)
    sel.close()
    return seen


def _start_runtime(bundle: Path, port: int) -> subprocess.Popen[bytes]:
    """bin/llmos-launch, the way systemd starts it (this venv's python has the runtime's deps)."""
    env = clean_env(LLMOS_PYTHON=sys.executable)
    proc = subprocess.Popen([str(bundle / "bin" / "llmos-launch"), "--port", str(port)], env=env, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise AssertionError("the bundle's runtime did not come up within 60 s")


def test_prompt_from_c_client_through_bundle_bridge_and_runtime(
    host_bundle: BundleResult, bare_venv: Path, harness_bin: Path,
    make_pty: Callable[[str], PtyPair], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    bundle = host_bundle.folder
    port = free_port()
    procs.append(_start_runtime(bundle, port))
    pair = make_pty("e2e")
    bridge = _start_bridge(bundle, bare_venv, pair.b, f"http://127.0.0.1:{port}", tmp_path)
    procs.append(bridge)
    log = _wait_log(bridge, b"bridge connected to", 30)
    assert b"bridge connected to" in log, log.decode(errors="replace")

    prompt = json.dumps({"prompt": "What is the capital of France?", "temperature": 0})
    r = subprocess.run([str(harness_bin), "client", str(pair.a), prompt, "timeout=60"],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert '"proto": 1' in r.stderr  # VERSION answered by the bundled bridge
    end = json.loads(r.stderr.split("end: ", 1)[1].splitlines()[0])
    assert end["chunks"] >= 1 and end["finish_reason"] in ("stop", "length")
    assert r.stdout  # the model's tokens, streamed back chunk by chunk
    audit = [json.loads(line) for line in (bundle.parent / "requests.jsonl").read_text().splitlines()]
    assert any(a["endpoint"] == "/v1/chat/completions" and a["status"] == 200 for a in audit)
    assert stop(bridge) == 0  # SIGTERM: the daemon stops cleanly, as systemd expects


def test_bundle_bridge_reports_a_missing_port_and_keeps_running(
    host_bundle: BundleResult, bare_venv: Path, procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    """Without llmos_edge the stand-in errors still give the clear message (and no traceback)."""
    gone = tmp_path / "ttyGONE"
    bridge = _start_bridge(host_bundle.folder, bare_venv, gone, "http://127.0.0.1:9", tmp_path)
    procs.append(bridge)
    log = _wait_log(bridge, b"device unplugged?", 20)
    assert b"does not exist (device unplugged?)" in log, log.decode(errors="replace")
    assert b"Traceback" not in log
    time.sleep(0.5)
    assert bridge.poll() is None  # still waiting for the cable
