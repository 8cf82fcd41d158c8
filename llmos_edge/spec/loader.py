"""Find, parse, merge (`extends`) and validate target and recipe files.

Errors always name the file and the field, and say what is allowed, because the person fixing
them is looking at the file, not at our code.
"""

from __future__ import annotations

import platform as _platform
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import SpecError, UserError
from ..paths import search_dirs
from .limits import read_toml
from .models import SCHEMA_VERSION, Recipe, Target
from .names import own_aliases, resolve_target_name

M = TypeVar("M", bound=BaseModel)
MAX_EVALUATION_BYTES = 64 << 20
_NATIVE_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _files(kind: str) -> dict[str, Path]:
    """name -> file; earlier search folders (the user's) shadow the shipped ones."""
    found: dict[str, Path] = {}
    for folder in reversed(search_dirs(kind)):
        if folder.is_dir():
            for f in sorted(folder.glob("*.toml")):
                found[f.stem] = f
    return found


def _read_toml(path: Path) -> dict[str, Any]:
    return read_toml(path)


def _check_version(path: Path, raw: dict[str, Any]) -> None:
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SpecError(
            str(path),
            "schema_version",
            f"is {version!r}; this llmos-edge reads schema_version = {SCHEMA_VERSION}",
            hints=["add `schema_version = 1` at the top", "or upgrade llmos-edge if the file is newer"],
        )


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else (lists included) is replaced by `over`."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_extends(
    kind: str, name: str, files: dict[str, Path], chain: tuple[str, ...] = ()
) -> dict[str, Any]:
    if name in chain:
        raise SpecError(str(files[chain[0]]), "extends", f"cycle: {' -> '.join((*chain, name))}")
    if name not in files:
        if chain:
            raise SpecError(
                str(files[chain[-1]]),
                "extends",
                f"unknown {kind[:-1]} {name!r}",
                hints=[f"known: {', '.join(sorted(files))}"],
            )
        raise _unknown(kind, name, files)
    path = files[name]
    raw = _read_toml(path)
    _check_version(path, raw)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise SpecError(str(path), "extends", "must be the name of another file (a string)")
    merged = deep_merge(_resolve_extends(kind, parent, files, (*chain, name)), raw)
    merged.pop("abstract", None)
    if "abstract" in raw:
        merged["abstract"] = raw["abstract"]
    return merged


def _unknown(kind: str, name: str, files: dict[str, Path]) -> UserError:
    return UserError(
        f"unknown {kind[:-1]} {name!r}",
        hints=[f"known {kind}: {', '.join(sorted(files))}", f"llmos-edge {kind} list"],
    )


def validate(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # An unknown field is usually a typo that also explains a "missing" one: report it first.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        problems = [(_field(e), _problem(model, e)) for e in errors]
        field, problem = problems[0]
        others = "; ".join(f"{f}: {p}" for f, p in problems[1:4])
        if others:
            problem += f" (also {others})"
        raise SpecError(str(path), field, problem) from None


def _field(err: Any) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(file)"


def _problem(model: type[BaseModel], err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown field; allowed here: {', '.join(_allowed_fields(model, err['loc'][:-1]))}"
    return str(err["msg"])


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        current = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
    return sorted(getattr(current, "model_fields", {}))


def load_target(name: str) -> Target:
    files = _files("targets")
    name = resolve_target_name(name, files)
    raw = _resolve_extends("targets", name, files)
    raw["aliases"] = list(own_aliases(files[name]))  # an alias names one file: never inherited
    if raw.get("abstract"):
        raise UserError(
            f"target {name!r} is an abstract base for `extends`, not a device you can build for",
            hints=["use one of the targets that extends it: llmos-edge targets list"],
        )
    raw.setdefault("name", name)
    platform = raw.get("platform")
    if isinstance(platform, dict) and platform.get("arch") == "native":
        platform["arch"] = _NATIVE_ARCH.get(_platform.machine().lower(), _platform.machine())
        libc, version = _platform.libc_ver()
        if libc == "glibc" and version and "libc_min" not in platform:
            platform["libc_min"] = version  # this machine's glibc: its wheel tags derive from it
    raw["source_file"] = str(files[name])
    return validate(Target, raw, files[name])


def load_recipe(name_or_path: str) -> Recipe:
    files = _files("recipes")
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        files = {**files, path.stem: path}
        name_or_path = path.stem
    if name_or_path not in files:
        raise _unknown("recipes", name_or_path, files)
    path = files[name_or_path]
    raw = _read_toml(path)
    _check_version(path, raw)
    raw.setdefault("name", name_or_path)
    raw["source_file"] = str(path)
    _inline_evaluation(raw, path)
    _inline_chat_template(raw, path)
    _resolve_local_paths(raw, path)
    return validate(Recipe, raw, path)


def _inline_evaluation(raw: dict[str, Any], path: Path) -> None:
    rel = raw.get("evaluation_file")
    if isinstance(rel, str) and not raw.get("evaluation_text"):
        eval_path = (path.parent / rel).resolve()
        if not eval_path.is_file():
            raise SpecError(str(path), "evaluation_file", f"{eval_path} does not exist")
        if eval_path.stat().st_size > MAX_EVALUATION_BYTES:
            raise SpecError(str(path), "evaluation_file",
                            f"{eval_path} is over {MAX_EVALUATION_BYTES >> 20} MiB",
                            hints=["a few hundred KiB of text measure perplexity well"])
        try:
            raw["evaluation_text"] = eval_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(str(path), "evaluation_file", f"{eval_path} is not UTF-8 text: {exc}") from exc


def _inline_chat_template(raw: dict[str, Any], path: Path) -> None:
    """chat_template_file resolves like evaluation_file: relative to the recipe; read into chat_template."""
    rel = raw.get("chat_template_file")
    if not isinstance(rel, str):
        return
    if raw.get("chat_template"):
        raise SpecError(str(path), "chat_template_file", "give chat_template or chat_template_file, not both")
    tpl_path = (path.parent / Path(rel).expanduser()).resolve()
    if not tpl_path.is_file():
        raise SpecError(str(path), "chat_template_file", f"{tpl_path} does not exist")
    if tpl_path.stat().st_size > 65536:
        raise SpecError(str(path), "chat_template_file", f"{tpl_path} is over 64 KiB; not a chat template")
    try:
        raw["chat_template"] = tpl_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), "chat_template_file", f"{tpl_path} is not UTF-8 text: {exc}") from None


def _resolve_local_paths(raw: dict[str, Any], path: Path) -> None:
    """Relative model paths in a recipe mean relative to the recipe file."""
    source = raw.get("source")
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        p = Path(source["path"]).expanduser()
        if not p.is_absolute():
            source["path"] = str((path.parent / p).resolve())


def is_abstract(name: str) -> bool:
    """Abstract bases are checked through the targets that extend them."""
    return bool(_read_toml(_files("targets")[name]).get("abstract"))


def list_targets() -> list[Target]:
    return [load_target(n) for n in sorted(_files("targets")) if not is_abstract(n)]


def list_recipes() -> list[Recipe]:
    return [load_recipe(n) for n in sorted(_files("recipes"))]


def target_files() -> dict[str, Path]:
    return _files("targets")


def recipe_files() -> dict[str, Path]:
    return _files("recipes")
