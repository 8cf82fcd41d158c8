"""The matrix file: which target x recipe images a release contains."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_edge.errors import SpecError, UserError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Job:
    target: str
    recipe: str

    @property
    def name(self) -> str:
        return f"{Path(self.recipe).stem}-{self.target}"


@dataclass(frozen=True)
class Matrix:
    version: str
    source_date_epoch: int
    jobs: tuple[Job, ...]


def _names(raw: dict[str, Any], key: str, file: str) -> list[str]:
    value = raw.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SpecError(file, key, "must be a non-empty list of names")
    return list(value)


def load_matrix(path: Path, *, check_names: bool = True) -> Matrix:
    """Parse and validate; unknown targets/recipes are named with the file and field."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read matrix file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), "(toml)", str(exc)) from exc
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise SpecError(str(path), "schema_version", f"must be {SCHEMA_VERSION}")
    targets, recipes = _names(raw, "targets", str(path)), _names(raw, "recipes", str(path))
    if check_names:
        _check_known(path, targets, recipes)
    excluded = {(e.get("target"), e.get("recipe")) for e in raw.get("exclude", []) if isinstance(e, dict)}
    jobs = tuple(Job(t, r) for t in targets for r in recipes if (t, r) not in excluded)
    epoch = raw.get("source_date_epoch", 0)
    if not isinstance(epoch, int) or epoch < 0:
        raise SpecError(str(path), "source_date_epoch", "must be a non-negative integer")
    version = raw.get("version", "0.1.0")
    if not isinstance(version, str):
        raise SpecError(str(path), "version", "must be a string like 1.0.0")
    return Matrix(version, epoch, jobs)


def _check_known(path: Path, targets: list[str], recipes: list[str]) -> None:
    from llmos_edge.spec import recipe_files, target_files

    for field, names, known in (("targets", targets, target_files()), ("recipes", recipes, recipe_files())):
        unknown = [n for n in names if n not in known and not Path(n).is_file()]
        if unknown:
            raise SpecError(str(path), field, f"unknown: {', '.join(unknown)}",
                            hints=[f"known {field}: {', '.join(sorted(known))}"])
