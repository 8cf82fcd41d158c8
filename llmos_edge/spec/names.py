"""Target names as users type them: the exact name, an alias the file declares (`aliases = [...]`),
or an unambiguous prefix. Anything else is refused with the close matches, never guessed."""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path

from ..errors import SpecError, UserError


def own_aliases(path: Path) -> tuple[str, ...]:
    """The aliases a target file declares itself (never inherited through `extends`)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f).get("aliases", [])
    except (OSError, tomllib.TOMLDecodeError):
        return ()  # the loader reports a broken file when it is the one asked for
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise SpecError(str(path), "aliases", 'must be a list of names, e.g. aliases = ["jetson"]')
    return tuple(raw)


def _buildable(files: dict[str, Path]) -> dict[str, Path]:
    out = {}
    for name, path in files.items():
        try:
            with open(path, "rb") as f:
                abstract = bool(tomllib.load(f).get("abstract"))
        except (OSError, tomllib.TOMLDecodeError):
            abstract = False
        if not abstract:
            out[name] = path
    return out


def alias_table(files: dict[str, Path]) -> dict[str, str]:
    """alias -> target name; an alias that names another target or two targets is a file error."""
    table: dict[str, str] = {}
    for name, path in sorted(files.items()):
        for alias in own_aliases(path):
            if alias in files and alias != name:
                raise SpecError(str(path), "aliases", f"{alias!r} is already the name of a target")
            if table.get(alias, name) != name:
                raise SpecError(str(path), "aliases", f"{alias!r} is also an alias of {table[alias]!r}")
            table[alias] = name
    return table


def resolve_target_name(name: str, files: dict[str, Path]) -> str:
    """Exact name > alias > unique prefix of a buildable target; else a UserError with the choices."""
    if name in files:
        return name
    aliases = alias_table(files)
    if name in aliases:
        return aliases[name]
    buildable = _buildable(files)
    matches = sorted(
        {n for n in buildable if n.startswith(name)} | {t for a, t in aliases.items() if a.startswith(name)}
    )
    if name and len(matches) == 1:
        return matches[0]
    if name and matches:
        raise UserError(
            f"target {name!r} is ambiguous: it matches {', '.join(matches)}",
            hints=[f"--target {m}" for m in matches],
        )
    close = difflib.get_close_matches(name, [*buildable, *aliases], n=3, cutoff=0.6)
    hints = [f"did you mean: {', '.join(close)}?"] if close else []
    hints += [f"known targets: {', '.join(sorted(buildable))}", "llmos-edge targets list"]
    raise UserError(f"unknown target {name!r}", hints=hints)
