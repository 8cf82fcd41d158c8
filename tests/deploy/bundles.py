"""Small but complete bundles (docs/design.md layout) with a stdlib HTTP "runtime" and a real smoke test.

The model file is random bytes (no model is needed to test deploy); the runtime really listens and
answers with its tag, so "the old release still serves" is checked over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import tempfile
from pathlib import Path
from typing import Any

from llmos_edge.bundle import manifest as mf
from llmos_edge.bundle.keys import sign
from llmos_edge.device import pack

RUNTIME_MAIN = """
import http.server, json, os, sys, time
cfg_path = sys.argv[sys.argv.index("--config") + 1]
cfg = json.load(open(cfg_path))
if cfg.get("behaviour") == "oom":
    bytearray(1 << 62)  # a real failed allocation: MemoryError
if cfg.get("behaviour") == "crash":
    print("fake runtime: crashing on purpose", flush=True)
    sys.exit(3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"tag": cfg["tag"]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
print("fake runtime", cfg["tag"], "listening on", cfg["port"], flush=True)
http.server.ThreadingHTTPServer((cfg["host"], cfg["port"]), H).serve_forever()
"""

SMOKE = """
import json, os, sys, urllib.request
cfg = json.load(open(os.environ["LLMOS_CONFIG"]))
if cfg.get("behaviour") == "smoke-fail":
    print("smoke: golden answer mismatch (on purpose)"); sys.exit(1)
if cfg.get("behaviour") == "smoke-hang":
    import time; time.sleep(3600)
with urllib.request.urlopen(os.environ["LLMOS_BASE_URL"] + "/", timeout=10) as r:
    tag = json.loads(r.read())["tag"]
print("smoke: runtime answered", tag)
sys.exit(0 if tag == cfg["tag"] else 1)
"""


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_files(
    folder: Path,
    *,
    tag: str,
    port: int,
    host: str,
    model_size: int,
    seed: int,
    behaviour: str | None,
    extra_files: dict[str, bytes] | None,
) -> None:
    (folder / "models" / "fake").mkdir(parents=True)
    (folder / "models" / "fake" / "weights.bin").write_bytes(payload(model_size, seed))
    (folder / "models" / "fake" / "llmos_model.json").write_text(json.dumps({"name": "fake"}))
    (folder / "runtime" / "llmos_runtime").mkdir(parents=True)
    (folder / "runtime" / "llmos_runtime" / "__init__.py").write_text("")
    (folder / "runtime" / "llmos_runtime" / "__main__.py").write_text(RUNTIME_MAIN)
    (folder / "config").mkdir()
    cfg: dict[str, Any] = {
        "host": host,
        "port": port,
        "tag": tag,
        "memory_budget_mb": 16,
        "models": [{"id": "fake", "path": "../models/fake"}],
    }
    if behaviour:
        cfg["behaviour"] = behaviour
    (folder / "config" / "runtime.json").write_text(json.dumps(cfg, indent=2))
    (folder / "smoke").mkdir()
    (folder / "smoke" / "smoke.py").write_text(SMOKE)
    (folder / "bin").mkdir()
    (folder / "bin" / "llmos-agent").write_bytes(pack.agent_script())
    for rel, data in (extra_files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def make_bundle(
    out: Path,
    version: str,
    *,
    port: int,
    key: Path | None,
    target: str = "host",
    arch: str | None = None,
    model_size: int = 256 * 1024,
    seed: int = 1,
    tag: str | None = None,
    behaviour: str | None = None,
    extra_files: dict[str, bytes] | None = None,
    host: str = "127.0.0.1",
) -> Path:
    """A bundle folder signed with `key` (unsigned when key is None)."""
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"bundle-{version}-", dir=out))
    write_files(
        folder,
        tag=tag or version,
        port=port,
        host=host,
        model_size=model_size,
        seed=seed,
        behaviour=behaviour,
        extra_files=extra_files,
    )
    files = {}
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        files[p.relative_to(folder).as_posix()] = {
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "size": p.stat().st_size,
        }
    manifest = {
        "schema_version": 1,
        "bundle_version": version,
        "name": "fake-bundle",
        "target": target,
        "recipe": "test",
        "created": "1970-01-01T00:00:00Z",
        "source_model_sha256": "0" * 64,
        "toolchain_lock": None,
        "quality_report": None,
        "files": files,
        "encrypted": None,
        "platform": {"arch": arch or platform.machine(), "libc": "glibc", "python": "3.11"},
    }
    data = mf.dump(manifest)
    (folder / "manifest.json").write_bytes(data)
    if key is not None:
        sig, _ = sign(data, key)
        (folder / "manifest.sig").write_bytes(sig)
    return folder
