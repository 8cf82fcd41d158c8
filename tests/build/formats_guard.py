"""Which package files an exporter's stages run: a static import walk from its builder module.

Used by test_formats.py to prove that every such file is part of the exporter's stage keys (so an edit
to it can never reuse a stale cache entry). Worker scripts are found by the names the stage modules
pass to run_worker ("tflite_export.py"), then walked through their own bare imports.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path

import llmos_edge
from llmos_edge.formats import Exporter

PKG = Path(llmos_edge.__file__).resolve().parent
WORKERS = "toolchains/workers"
# where code that shapes a stage's output lives; everything else (errors, fsutil, spec, cache) does not
CODE_DIRS = ("stages/", "build_model/", "runtime/", f"{WORKERS}/")
# files on the import path that make no stage output, and why
NOT_STAGE_CODE = {
    "build_model/__init__.py": "sequences the stages and writes the report; makes no cached output",
    "stages/__init__.py": "docstring only",
    "stages/source.py": "fetch: content-addressed by the source's own sha256, not by a stage key",
    "stages/probe.py": "plan-time checks only; reads, never writes",
    "runtime/__init__.py": "package marker of the runtime",
}
# worker scripts a module names outside any stage's path, and why
WORKER_REFS_OUTSIDE_STAGES = {
    ("stages/evaluate.py", "optimum_worker.py"): "torch_cosine(): a measuring helper the gate never calls",
}
_WORKER_NAME = re.compile(r"""["'](\w+\.py)["']""")


def _rel(path: Path) -> str:
    return path.relative_to(PKG).as_posix()


def _module_file(module: str) -> Path | None:
    """llmos_edge.a.b -> its .py file (module or package __init__), None outside the package."""
    if module != "llmos_edge" and not module.startswith("llmos_edge."):
        return None
    base = PKG.joinpath(*module.split(".")[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _package_of(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1])


def _imports(path: Path) -> set[Path]:
    tree = ast.parse(path.read_text())
    out: set[Path] = set()
    if _rel(path).startswith(WORKERS):
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            out |= {PKG / WORKERS / f"{n}.py" for n in names if (PKG / WORKERS / f"{n}.py").is_file()}
        return out
    pkg = _package_of(path)
    for node in ast.walk(tree):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            mods = [parent] + [f"{parent}.{a.name}" for a in node.names]
        for m in mods:
            f = _module_file(m)
            if f is not None:
                out.add(f)
    for name in _WORKER_NAME.findall(path.read_text()):
        if (_rel(path), name) in WORKER_REFS_OUTSIDE_STAGES:
            continue
        if (PKG / WORKERS / name).is_file():
            out.add(PKG / WORKERS / name)
    return out


def stage_code_closure(builder: str) -> set[str]:
    """Every file under CODE_DIRS a builder module (build_model/<builder>.py) reaches, less NOT_STAGE_CODE."""
    start = PKG / "build_model" / f"{builder}.py"
    seen: set[Path] = set()
    todo = [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(g for g in _imports(f) if _rel(g).startswith(CODE_DIRS))
    return {_rel(f) for f in seen if _rel(f).startswith(CODE_DIRS)} - set(NOT_STAGE_CODE)


def left_out(exporters: Sequence[Exporter], builder: str) -> set[str]:
    """Files a builder module runs that no stage key of the exporters it serves covers.

    The walk is per module, so the exporters sharing a builder (onnx: decoders and encoders) are
    checked together; which file belongs to which stage is the table's word.
    """
    listed = {f for e in exporters if e.builder == builder for files in e.stage_code.values() for f in files}
    return stage_code_closure(builder) - listed
