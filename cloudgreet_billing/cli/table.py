"""Tables for people and plain rows for pipes: never a cut id, amount or status.

On a terminal ``print_table`` draws a Rich table in which id, money, status, number and
time cells are never wrapped or shortened (each column is at least as wide as its longest
value). When the terminal is too narrow it first writes times relatively ("3h ago"),
then drops the columns marked droppable, lowest ``drop`` rank first (notes, then names,
then long dates), and if the rest still does not fit prints one block of ``key: value``
pairs per row. Colour (``Styled``) only on a colour terminal, never with ``NO_COLOR``.

When stdout is not a terminal (a pipe, a cron log) it prints tab-separated rows with a
header line and full values, as ``gh`` does: times in ISO 8601 UTC, tabs, newlines and
backslashes in a cell escaped as ``\\t``, ``\\n`` and ``\\\\``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, TextIO

from cloudgreet_billing.cli.render import when
from cloudgreet_billing.domain.timefmt import iso_z

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

Kind = Literal["id", "money", "status", "number", "text", "prose", "time"]

#: Kinds a person copies or acts on: shown whole on one line, whatever the width.
WHOLE_KINDS = frozenset({"id", "money", "status", "number", "time"})


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header, what its values are, and whether it may be left out.

    ``drop`` is the column's rank among those that may be dropped when the terminal is
    too narrow: the lowest goes first. ``None`` means it is always shown.
    """

    header: str
    kind: Kind = "text"
    drop: int | None = None


@dataclass(frozen=True, slots=True)
class Styled:
    """A cell that stands out (MISMATCH, past due, LIVE) on a colour terminal."""

    text: str
    style: str = "bold red"

    def __str__(self) -> str:
        return self.text


Cell = str | int | datetime | Styled | None


def escape_tsv(text: str) -> str:
    """One cell of a tab-separated row: no tab or line break can split it."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def relative(moment: datetime, now: datetime) -> str:
    """``3h ago`` or ``in 2d``: a time in a few characters, for a narrow terminal."""
    delta = now - moment
    future = delta < timedelta(0)
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return "just now"
    size, unit = next(
        (size, unit) for size, unit in ((86400, "d"), (3600, "h"), (60, "m")) if seconds >= size
    )
    amount = f"{int(seconds // size)}{unit}"
    return f"in {amount}" if future else f"{amount} ago"


def _plain(value: Cell) -> str:
    """A cell's full value for a pipe."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_z(value) or ""
    return str(value)


def _shown(value: Cell, kind: Kind, now: datetime | None) -> str:
    """A cell's text on a terminal; ``now`` set means times are written relatively."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return when(value) if now is None else relative(value, now)
    if isinstance(value, int) and kind == "number":
        return f"{value:,}"
    return str(value)


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    console: Console | None = None,
    now: datetime | None = None,
    empty: str | None = None,
    show_header: bool = True,
) -> None:
    """Print ``rows`` for a person on a terminal, or as tab-separated rows for a pipe.

    ``empty`` is said when there are no rows: on stdout on a terminal, on stderr for a
    pipe (which then gets nothing, not even the header).
    """
    from cloudgreet_billing.cli.output import stdout_console

    console = console or stdout_console()
    if not console.is_terminal:
        if rows:
            _print_rows(columns, rows, console)
        elif empty:
            sys.stderr.write(empty + "\n")
        return
    if not rows:
        if empty:
            console.print(empty)
        return
    _print_for_terminal(columns, rows, console, now, show_header)


def _print_rows(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], console: Console
) -> None:
    out = console.file
    try:
        out.write("\t".join(escape_tsv(column.header) for column in columns) + "\n")
        for row in rows:
            cells = (escape_tsv(_plain(value)) for value in row)
            out.write("\t".join(cells) + "\n")
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other Unix tools do, and let
        # nothing more reach the closed pipe (Python flushes stdout once more at exit).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())


def _print_for_terminal(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    console: Console,
    now: datetime | None,
    show_header: bool,
) -> None:
    from cloudgreet_billing.clock import utcnow

    width = console.width
    # A column that may be dropped and is empty in every row says nothing: leave it out.
    shown = [
        index
        for index, column in enumerate(columns)
        if column.drop is None or any(row[index] not in (None, "") for row in rows)
    ]
    has_times = any(column.kind == "time" for column in columns)
    attempts: list[tuple[list[int], datetime | None]] = [(shown, None)]
    if has_times:
        attempts.append((shown, now or utcnow()))
    relative_now = attempts[-1][1]
    droppable = sorted(
        (index for index, column in enumerate(columns) if column.drop is not None),
        key=lambda index: (columns[index].drop, -index),
    )
    for index in droppable:
        shown = [kept for kept in shown if kept != index]
        attempts.append((shown, relative_now))
    for kept, times in attempts:
        table = _table(columns, rows, kept, times, console, show_header)
        if _natural_width(table, console) <= width:
            console.print(table)
            return
    # Nothing fits on one line per row: let prose wrap, if ids and amounts still fit whole.
    for kept, times in attempts:
        table = _table(columns, rows, kept, times, console, show_header)
        if _minimum_width(table, console) <= width:
            console.print(table)
            return
    _print_blocks(columns, rows, console)


def _natural_width(table: Table, console: Console) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(100_000), table).maximum


def _minimum_width(table: Table, console: Console) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(100_000), table).minimum


def _coloured(console: Console) -> bool:
    return console.color_system is not None and not console.no_color


def styled_text(value: str | Styled, console: Console) -> Text:
    """A value to print on ``console``, in its colour only where colour is shown."""
    return _text(value, "text", None, console)


def _text(value: Cell, kind: Kind, now: datetime | None, console: Console) -> Text:
    from rich.text import Text

    text = _shown(value, kind, now)
    if isinstance(value, Styled) and _coloured(console):
        return Text(text, style=value.style)
    return Text(text)


def _table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    kept: Sequence[int],
    now: datetime | None,
    console: Console,
    show_header: bool,
) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
        show_header=show_header,
        header_style="bold" if _coloured(console) else "",
    )
    cells = [
        [_text(row[index], columns[index].kind, now, console) for index in kept] for row in rows
    ]
    for position, index in enumerate(kept):
        column = columns[index]
        longest = max(
            [len(column.header)] + [cell.cell_len for cell in (r[position] for r in cells)]
        )
        whole = column.kind in WHOLE_KINDS
        table.add_column(
            column.header,
            justify="right" if column.kind in ("money", "number") else "left",
            no_wrap=whole,
            overflow="fold" if column.kind == "prose" else "ellipsis",
            min_width=longest if whole else _longest_word(cells, position, column.header),
        )
    for row_cells in cells:
        table.add_row(*row_cells)
    return table


def _longest_word(cells: Sequence[Sequence[Text]], position: int, header: str) -> int:
    """The narrowest a wrapping column can be with no word cut (prose may still fold)."""
    words = header.split()
    for row in cells:
        words.extend(row[position].plain.split())
    return max((len(word) for word in words), default=1)


def _print_blocks(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], console: Console
) -> None:
    """One block per row, a blank line between: its ``key: value`` pairs, as many to a
    line as fit, each pair whole (one too long for any line has a line to itself)."""
    from rich.text import Text

    gap = "  "
    for number, row in enumerate(rows):
        if number:
            console.print()
        line = Text()
        for column, value in zip(columns, row, strict=True):
            if value is None or value == "":
                continue
            pair = Text(f"{column.header}: ")
            pair.append_text(_text(value, column.kind, None, console))
            if line.cell_len and line.cell_len + len(gap) + pair.cell_len > console.width:
                console.print(line, soft_wrap=True)
                line = Text()
            if line.cell_len:
                line.append(gap)
            line.append_text(pair)
        if line.cell_len:
            console.print(line, soft_wrap=True)


def stand_out(text: str, stream: TextIO) -> str:
    """``text`` in bold red when ``stream`` is a colour terminal (``LIVE`` in a banner or a
    prompt written straight to stderr); as it is with ``NO_COLOR`` or off a terminal."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb" or not stream.isatty():
        return text
    return f"\x1b[1;31m{text}\x1b[0m"


def left_out(shown: int, total: int) -> None:
    """Say on stderr that a listing stopped at ``--limit``: ``showing 50 of 1,234 (--limit)``."""
    if total > shown:
        sys.stderr.write(f"showing {shown:,} of {total:,} (--limit)\n")
