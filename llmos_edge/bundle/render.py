"""Render the bundle's text files from firmware_templates/<kind>/ and from a recipe.

The project's own templates are trusted and use a normal environment; templates a recipe brings
are data from outside and run in an immutable sandbox. Both use StrictUndefined so a missing
variable stops the build instead of shipping an empty setting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BugError, UserError
from ..paths import shipped_dir

TEMPLATE_SUFFIX = ".j2"
RESERVED_TOP = frozenset({"models", "runtime", "bridge", "wheels", "manifest.json", "manifest.sig"})
# A bundle kind = template folders laid over each other (kind, sub-folder); later layers add files.
# The host half of an ESP32 host-offload system is a linux-service bundle plus the bridge files in
# firmware_templates/esp32s3-host-offload/host/ (the rest of that folder is the ESP-IDF project).
KIND_LAYERS: dict[str, tuple[tuple[str, str], ...]] = {
    "esp32s3-host-offload": (("linux-service", ""), ("esp32s3-host-offload", "host")),
}


def _to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True)


def _filters() -> dict[str, Any]:
    return {"to_json": _to_json, "sh_quote": _sh_quote}


def _sh_quote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))


def template_dir(kind: str) -> Path:
    folder = shipped_dir("firmware_templates") / kind
    if not folder.is_dir():
        raise UserError(f"no bundle templates for bundle kind {kind!r} ({folder} is missing)",
                        hints=["this llmos-edge cannot bundle for that target kind"])
    return folder


def render_project(kind: str, context: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """relpath -> (text, executable) for every file of the kind's template layers."""
    out: dict[str, tuple[str, bool]] = {}
    for layer_kind, sub in KIND_LAYERS.get(kind, ((kind, ""),)):
        folder = template_dir(layer_kind) / sub if sub else template_dir(layer_kind)
        for rel, item in _render_folder(folder, context).items():
            if rel in out:
                raise BugError(f"template {folder / rel} would replace a file of an earlier layer")
            out[rel] = item
    return out


def _render_folder(folder: Path, context: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False,
    )
    env.filters.update(_filters())
    out: dict[str, tuple[str, bool]] = {}
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = src.relative_to(folder).as_posix()
        if not rel.endswith(TEMPLATE_SUFFIX):
            text = src.read_text(encoding="utf-8")
        else:
            try:
                text = env.get_template(rel).render(**context)
            except jinja2.UndefinedError as exc:
                raise BugError(f"template {src}: {exc.message}") from exc
            rel = rel[: -len(TEMPLATE_SUFFIX)]
        # scripts are executable: a shebang is the signal (file modes do not survive every checkout)
        out[rel] = (text, text.startswith("#!") or rel.startswith("bin/"))
    return out


def check_output_path(relpath: str, recipe: str) -> str:
    """A recipe may add files, but only inside the bundle and not over what the bundle owns."""
    bad = _path_problem(relpath)
    if bad:
        raise UserError(f"recipe {recipe!r}: templates entry {relpath!r} {bad}",
                        hints=["use a relative path inside the bundle, e.g. extra/notes.txt"])
    return PurePosixPath(relpath).as_posix()


def _path_problem(relpath: str) -> str | None:
    if not relpath or "\\" in relpath or "\0" in relpath:
        return "is empty or contains a backslash / NUL"
    p = PurePosixPath(relpath)
    if p.is_absolute():
        return "is an absolute path"
    if any(part in ("..", ".", "") for part in relpath.split("/")):
        return "contains '..' or '.' or an empty component"
    if p.parts[0] in RESERVED_TOP:
        return f"would write into {p.parts[0]}, which the bundle itself owns"
    return None


RENDER_TIMEOUT_S = 10.0
RENDER_MAX_BYTES = 16 << 20  # all of a recipe's templates together
RENDER_MAX_MEMORY = 1 << 30
_HINTS = {
    "security": ["recipe templates may only use the variables they are given"],
    "undefined": [],
    "forbidden": ["inline the text instead of including another template"],
    "size": ["recipe templates add small text files; generate large data elsewhere"],
}


def render_recipe_templates(templates: Mapping[str, str], context: Mapping[str, Any],
                            recipe: str) -> dict[str, str]:
    """Render recipe-supplied templates sandboxed, in a child process with a time and memory budget."""
    rels = {relpath: check_output_path(relpath, recipe) for relpath in sorted(templates)}
    if not rels:
        return {}
    answer = _run_sandbox({"templates": dict(templates), "context": dict(context),
                           "max_bytes": RENDER_MAX_BYTES}, recipe)
    if "error" in answer:
        err = answer["error"]
        where = f"recipe {recipe!r}: template {err['template']!r}"
        hints = _HINTS.get(err["kind"], [])
        if err["kind"] == "undefined":
            hints = [f"available: {', '.join(sorted(context))}"]
        raise UserError(f"{where} {_VERBS.get(err['kind'], 'failed:')} {err['message']}", hints=hints)
    rendered: dict[str, str] = answer["ok"]
    return {rels[k]: v for k, v in rendered.items()}


_VERBS = {"security": "tried an operation the sandbox forbids:", "undefined": "uses an undefined variable:",
          "syntax": "is not a valid Jinja2 template:", "forbidden": "", "size": ""}


def _run_sandbox(request: dict[str, Any], recipe: str) -> dict[str, Any]:
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from llmos_edge.bundle.sandbox_render import main; main()")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[2])],
                              input=json.dumps(request), capture_output=True, text=True,
                              timeout=RENDER_TIMEOUT_S, preexec_fn=_limit_memory, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"recipe {recipe!r}: its templates did not finish rendering within "
                        f"{RENDER_TIMEOUT_S:.0f} s; refusing them",
                        hints=["a template loops too long; recipe templates add small text files"]) from exc
    try:
        answer: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise UserError(f"recipe {recipe!r}: rendering its templates failed (exit {proc.returncode}, "
                        f"e.g. over the {RENDER_MAX_MEMORY >> 20} MiB memory budget): "
                        f"{proc.stderr.strip()[-300:]}") from None
    return answer


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (RENDER_MAX_MEMORY, RENDER_MAX_MEMORY))
