"""Progress bars for long work: on stderr, only when a person is watching.

Services report progress through a plain callback (``services.Progress``); this is the
one place that turns it into a Rich bar. JSON mode and cron (no TTY) get nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cloudgreet_billing.cli.output import json_mode, stderr_console


@contextmanager
def progress_bar(
    label: str, total: int | None = None, *, minimum: int = 0
) -> Iterator[Callable[[int], None] | None]:
    """Yield ``advance(n)``, or None when no bar should be drawn (JSON mode, no TTY, or a
    known ``total`` below ``minimum``, where a bar would only flicker)."""
    if json_mode() or not sys.stderr.isatty() or (total is not None and total < minimum):
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
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
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.advance(task, done)
