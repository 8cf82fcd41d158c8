"""Isolated converter environments, created from exact-pinned lock files and reused when ready.

torch/transformers/optimum live only here: converters need conflicting transformers versions and
a deploy-only install must never pull torch. Each env is named after its lock hash, so a changed
lock gives a new env; a `.llmos-ready` marker written last means a half-installed env is never used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_write_text, ensure_free_space, file_lock
from ..paths import cache_root

LOCKS_DIR = Path(__file__).resolve().parent / "locks"
READY = ".llmos-ready"
# what each env is for and the modules `doctor` imports to prove it works
TOOLCHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx-genai": (
        "decoders: onnxruntime-genai model builder (transformers 5)",
        ("torch", "transformers", "onnxruntime_genai.models.builder", "gguf", "onnx"),
    ),
    "onnx-optimum": (
        "encoders: optimum-onnx exporters (transformers 4.57)",
        ("torch", "transformers", "optimum.exporters.onnx", "onnxruntime.quantization"),
    ),
    "tflite": (
        "TFLite: litert-torch + ai-edge-quantizer (transformers 5)",
        ("torch", "transformers", "litert_torch", "ai_edge_quantizer", "ai_edge_litert.interpreter"),
    ),
}
_INSTALL_BYTES = 2_500_000_000


@dataclass(frozen=True)
class Toolchain:
    """A resolved toolchain: where it lives and what lock it was made from."""

    name: str
    lock_hash: str
    env_dir: Path
    packages: dict[str, str]

    @property
    def python(self) -> Path:
        return self.env_dir / "bin" / "python"

    @property
    def ready(self) -> bool:
        return (self.env_dir / READY).is_file() and self.python.exists()

    def lock_info(self) -> dict[str, object]:
        """What goes into the build report: name, lock hash, pinned versions."""
        return {"name": self.name, "lock_sha256_12": self.lock_hash, "packages": dict(self.packages)}


def lock_path(name: str) -> Path:
    if name not in TOOLCHAINS:
        raise UserError(f"unknown toolchain '{name}'", hints=[f"known toolchains: {', '.join(TOOLCHAINS)}"])
    return LOCKS_DIR / f"{name}.txt"


def parse_lock(text: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pkg, _, ver = line.partition("==")
            pins[pkg.lower()] = ver
    return pins


def resolve(name: str) -> Toolchain:
    """Name -> Toolchain (hash covers the lock and the Python version the env is made with)."""
    text = lock_path(name).read_text()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    digest = hashlib.sha256(f"{py}\n{text}".encode()).hexdigest()[:12]
    env_dir = cache_root() / "toolchains" / f"{name}-{digest}"
    return Toolchain(name, digest, env_dir, parse_lock(text))


def ensure(name: str, *, progress: bool = True) -> Toolchain:
    """Return a ready toolchain, installing it first (once, even with concurrent callers)."""
    tc = resolve(name)
    if tc.ready:
        return tc
    with file_lock(tc.env_dir.with_name(tc.env_dir.name + ".lock")):
        if tc.ready:  # another process finished it while we waited
            return tc
        _install(tc, progress=progress)
    return tc


def _install(tc: Toolchain, *, progress: bool) -> None:
    ensure_free_space(tc.env_dir.parent, _INSTALL_BYTES, f"the {tc.name} toolchain")
    if progress:  # also when stderr is no terminal (CI logs): say why the first build takes minutes
        print(f"creating the {tc.name} toolchain in {tc.env_dir} (first use; a few minutes, reused after)",
              file=sys.stderr, flush=True)
    shutil.rmtree(tc.env_dir, ignore_errors=True)  # leftovers of an interrupted install
    _run_quiet([_base_python(), "-m", "venv", str(tc.env_dir)], "create the venv")
    cmd = [
        str(tc.python),
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--progress-bar",
        "off",
        "-r",
        str(lock_path(tc.name)),
    ]
    _pip_with_progress(cmd, tc, progress=progress)
    atomic_write_text(tc.env_dir / READY, f"{tc.name} {tc.lock_hash}\n")


def _base_python() -> str:
    """The interpreter behind the current venv, so toolchains do not nest venvs."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base) if base.exists() else sys.executable


def _run_quiet(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(
            f"toolchain setup failed to {what}: {proc.stderr.strip()[-800:]}",
            hints=["check Python's venv module is installed (apt-get install python3-venv)"],
        )


def _pip_with_progress(cmd: list[str], tc: Toolchain, *, progress: bool) -> None:
    """Run pip, showing one progress bar over the packages of the lock."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    tail: list[str] = []
    total = len(tc.packages) + 1
    with Progress(
        TextColumn("[bold]toolchain {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task(tc.name, total=total)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
            assert p.stdout is not None
            for line in p.stdout:
                tail = [*tail[-40:], line.rstrip()]
                if line.startswith(("Collecting", "Processing")):
                    bar.advance(task)
                elif line.startswith("Installing collected"):
                    bar.update(task, completed=total - 1, description=f"{tc.name} (installing)")
            rc = p.wait()
    if rc != 0:
        raise UserError(
            f"installing toolchain {tc.name} failed (pip exit {rc}):\n" + "\n".join(tail[-15:]),
            hints=[
                "check that the package registry is reachable",
                f"retry with: llmos-edge toolchain install {tc.name}",
            ],
        )


def list_toolchains() -> list[Toolchain]:
    return [resolve(n) for n in TOOLCHAINS]


def doctor(name: str) -> tuple[bool, str]:
    """Import each key module in the env; (ok, detail)."""
    tc = resolve(name)
    if not tc.ready:
        return False, f"not installed (run: llmos-edge toolchain install {name})"
    code = "import importlib,sys\nfor m in sys.argv[1:]: importlib.import_module(m)\nprint('ok')"
    proc = subprocess.run(
        [str(tc.python), "-c", code, *TOOLCHAINS[name][1]],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        return False, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "import failed"
    return True, f"imports ok ({', '.join(TOOLCHAINS[name][1])})"
