"""Progress bars for long work: on stderr, only when a person is watching.

Services report progress through a plain callback (``services.Progress``); this is the
one place that turns it into a Rich bar. JSON mode and cron (no TTY) get nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cloudgreet_billing.cli.output import json_mode, stderr_console

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.progress import Progress, ProgressColumn


@contextmanager
def progress_bar(
    label: str, total: int | None = None, *, minimum: int = 0, stdout_is_data: bool = False
) -> Iterator[Callable[[int], None] | None]:
    """Yield ``advance(n)``, or None when no bar should be drawn (JSON mode, no TTY, or a
    known ``total`` below ``minimum``, where a bar would only flicker). ``stdout_is_data``:
    the command writes its result to stdout while the bar is up."""
    if json_mode() or not sys.stderr.isatty() or (total is not None and total < minimum):
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        if total
        else [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
    )
    with _live(columns, stdout_is_data=stdout_is_data) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.advance(task, done)


def _live(columns: Sequence[str | ProgressColumn], *, stdout_is_data: bool = False) -> Progress:
    """A transient display on stderr. While it is up, Rich prints what goes to stdout
    above the bar, through the stderr console; ``stdout_is_data`` (export-csv's CSV)
    leaves stdout alone instead."""
    from rich.progress import Progress

    return Progress(
        *columns,
        console=stderr_console(),
        transient=True,
        redirect_stdout=not stdout_is_data,
    )


#: ``update(completed, detail)``: how much of a known total is done, and a word on it.
Meter = Callable[[float, str], None]


class Board:
    """Bars of known totals, one after another in one display (``sync``: the pages read,
    then the events applied). Each shows the percentage done, a detail and the time left."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar

    def meter(self, label: str, total: float) -> Meter:
        task = self._bar.add_task(label, total=max(total, 1e-9), detail="")

        def update(completed: float, detail: str) -> None:
            self._bar.update(task, completed=min(completed, total), detail=detail)

        return update


@contextmanager
def progress_board(*, stdout_is_data: bool = False) -> Iterator[Board | None]:
    """A ``Board`` on stderr, or None when no bar should be drawn (JSON mode, no TTY)."""
    if json_mode() or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=20),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with _live(columns, stdout_is_data=stdout_is_data) as bar:
        yield Board(bar)


@contextmanager
def progress_meter(
    label: str, total: float, *, minimum: float = 0, stdout_is_data: bool = False
) -> Iterator[Meter | None]:
    """One bar of a known ``total`` (a file's bytes): None when none should be drawn, as
    for ``progress_board``, or when there is no ``total`` or it is below ``minimum``."""
    if total <= 0 or total < minimum:
        yield None
        return
    with progress_board(stdout_is_data=stdout_is_data) as board:
        yield None if board is None else board.meter(label, total)
