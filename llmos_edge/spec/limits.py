"""Size and nesting limits for the files we parse (TOML specs and inventories, JSON manifests).

Python's parsers recurse once per bracket: 100k nested brackets end in RecursionError (a crash,
exit 1). We count the depth first, outside strings and comments, and refuse deep or huge files
with a clear error before any parser sees them.
"""

from __future__ import annotations

import re
import tomllib
from itertools import accumulate
from pathlib import Path
from typing import Any

from ..errors import SpecError, UserError

MAX_TOML_BYTES = 4 << 20  # a target, recipe or inventory is a few KiB
MAX_DEPTH = 64  # real files nest 3-4 levels
_OPEN, _CLOSE = "[{", "]}"
_TOML_SKIP = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*')
_JSON_SKIP = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting_depth(text: str, *, toml: bool) -> int:
    """Deepest bracket nesting of text, not counting brackets inside strings (or TOML comments)."""
    bare = (_TOML_SKIP if toml else _JSON_SKIP).sub("", text)
    steps = (1 if b in _OPEN else -1 for b in _BRACKETS.findall(bare))
    return max(accumulate(steps, initial=0))


def depth_problem(text: str, *, toml: bool, max_depth: int = MAX_DEPTH) -> str | None:
    depth = nesting_depth(text, toml=toml)
    if depth > max_depth:
        return f"nests brackets {depth} deep (the limit is {max_depth})"
    return None


def read_toml(path: Path, *, max_bytes: int = MAX_TOML_BYTES) -> dict[str, Any]:
    """Parse a TOML file within size and depth limits; SpecError (exit 2) names the file."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SpecError(str(path), "(file)", f"is {size} bytes; the limit is {max_bytes}",
                            hints=["is this the right file? targets, recipes and inventories are small"])
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), "(file)", f"is not UTF-8 text: {exc}") from exc
    problem = depth_problem(text, toml=True)
    if problem:
        raise SpecError(str(path), "(file)", problem, hints=["fix the file; real specs nest a few levels"])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), "(file)", f"malformed TOML: {exc}",
                        hints=["fix the syntax; see docs/spec.md for examples"]) from exc
    except RecursionError as exc:  # belt and braces: the depth scan should have caught it
        raise SpecError(str(path), "(file)", "nests too deeply to parse") from exc
