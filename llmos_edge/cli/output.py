"""Shared output helpers: JSON for machines, tables for people.

Tables never cut what a user may copy (names, paths, hashes): a rich table only when stdout is a
terminal wide enough for every cell in full; otherwise plain aligned columns, one row per line, so
`llmos-edge targets list | grep NAME` always matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

_PAD = 2


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console

    cells = [[_cell(x) for x in r] for r in rows]
    console = Console()
    if console.is_terminal and _rich_width(columns, cells) <= console.width:
        _rich_table(console, title, columns, cells)
    else:
        click.echo(plain_table(title, columns, cells))


def _cell(value: Any) -> str:
    """One line per cell: a newline inside a value would break the row apart."""
    return str(value).replace("\r", " ").replace("\n", " ")


def _widths(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c), *(len(r[i]) for r in cells if i < len(r))]) for i, c in enumerate(columns)]


def _rich_width(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> int:
    """A rich table's full width: cells plus 1 padding each side plus the borders."""
    widths = _widths(columns, cells)
    return sum(widths) + 3 * len(widths) + 1


def plain_table(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    widths = _widths(columns, cells)
    lines = [title] if title else []
    if any(columns):
        lines.append(_row(columns, widths))
    lines += [_row(r, widths) for r in cells]
    return "\n".join(lines)


def _row(values: Sequence[str], widths: Sequence[int]) -> str:
    return (" " * _PAD).join(v.ljust(w) for v, w in zip(values, widths, strict=False)).rstrip()


def _rich_table(console: Any, title: str, columns: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(title))
    for c in columns:
        t.add_column(Text(c), no_wrap=True, overflow="ignore")
    for r in cells:
        t.add_row(*(Text(x) for x in r))  # Text: a "[red]" in a description is not markup
    console.print(t, markup=False, highlight=False, soft_wrap=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
