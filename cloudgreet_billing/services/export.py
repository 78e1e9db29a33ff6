"""CSV exports for finance: streamed from the store, in constant memory.

The formats (headers and cell rules) are ``domain.export``; this module picks the window,
streams the dataset, and writes it to a file by ``adapters.files``' rules: atomically (a
temporary file in the same folder, then a rename) so that a reader never sees half an
export, and never over the store itself.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

from cloudgreet_billing.adapters.files import write_file
from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.domain.export import (
    DATASETS,
    header_line,
    line,
    major_cell,
    number_cell,
    text_cell,
    time_cell,
)
from cloudgreet_billing.domain.inputs import check_window, shown
from cloudgreet_billing.domain.reconciliation import (
    DEFAULT_THRESHOLD_PCT,
    Window,
    shown_pct,
)
from cloudgreet_billing.domain.recovery import whole_seconds
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.domain.windows import EXPORT_DAYS, RECONCILIATION_DAYS, RECOVERY_DAYS
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services.reconcile import reconcile, window_ending
from cloudgreet_billing.services.recovery import build_recovery_report

#: Lines gathered before one write, for the datasets formatted in Python.
LINES_PER_CHUNK: Final = 2_000

CsvChunk = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ExportResult:
    dataset: str
    window: Window
    rows: int
    path: Path | None


def default_days(dataset: str) -> int:
    """Seven days, except the reconciliation and the recovery figures, which look back as
    far as ``reconcile`` and ``dunning report``."""
    if dataset == "reconciliation":
        return RECONCILIATION_DAYS
    return RECOVERY_DAYS if dataset == "recovery" else EXPORT_DAYS


def export_window(
    now: datetime,
    *,
    dataset: str = "ledger",
    days: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Window:
    """``--days`` back from now, or ``--since``/``--until`` (until defaults to now, since to
    the dataset's default days before until); the two forms do not mix."""
    if days is not None and (since is not None or until is not None):
        raise BadInput("give either --days or --since/--until, not both")
    if days is not None or (since is None and until is None):
        days = default_days(dataset) if days is None else days
        if dataset == "reconciliation":
            # Exactly the window ``reconcile --days N`` reads, whole seconds included.
            return window_ending(now, days)
        if days < 1:
            raise BadInput(f"--days must be at least 1, not {days}")
        return Window(start=now - timedelta(days=days), end=now)
    check_window(since, until)
    end = until or now
    start = since or end - timedelta(days=default_days(dataset))
    if start >= end:
        raise BadInput(
            f"--since {iso_z(start)} must be before now (the default --until)",
            hint="give a --since in the past, or an --until after it",
        )
    return Window(start=start, end=end)


def _alert_line(alert: Mapping[str, Any]) -> str:
    return line(
        (
            number_cell(alert["id"]),
            text_cell(alert["type"]),
            text_cell(alert["status"]),
            text_cell(alert["customer_id"]),
            text_cell(alert["invoice_id"]),
            number_cell(alert["amount_due"]),
            major_cell(alert["amount_due"], alert["currency"]),
            text_cell(alert["currency"]),
            text_cell(alert["stripe_event_id"]),
            number_cell(alert["attempt_count"]),
            text_cell(alert["last_failure"]),
            time_cell(alert["created_at"]),
            time_cell(alert["updated_at"]),
            time_cell(alert["acknowledged_at"]),
            time_cell(alert["resolved_at"]),
            text_cell(alert["resolution"]),
        )
    )


def _dunning_line(step: Mapping[str, Any]) -> str:
    return line(
        (
            number_cell(step["id"]),
            text_cell(step["invoice_id"]),
            text_cell(step["customer_id"]),
            number_cell(step["alert_id"]),
            number_cell(step["day"]),
            text_cell(step["channel"]),
            text_cell(step["template"]),
            text_cell(step["status"]),
            time_cell(step["due_at"]),
            time_cell(step["sent_at"]),
            number_cell(step["attempts"]),
            text_cell(step["last_error"]),
            text_cell(step["reason"]),
            time_cell(step["created_at"]),
            time_cell(step["updated_at"]),
        )
    )


def _reconciliation_lines(store: Store, window: Window, now: datetime) -> Iterator[str]:
    report = reconcile(
        store,
        window=window,
        threshold_pct=DEFAULT_THRESHOLD_PCT,
        now=now,
        invoices=None,
        source="mirror",
    )
    for row in report.rows:
        yield line(
            (
                time_cell(window.start),
                time_cell(window.end),
                text_cell(row.customer_id),
                text_cell(row.currency),
                number_cell(row.stripe_total),
                major_cell(row.stripe_total, row.currency),
                number_cell(row.ledger_total),
                major_cell(row.ledger_total, row.currency),
                number_cell(row.variance),
                major_cell(row.variance, row.currency),
                _pct_cell(row.variance_pct),
                text_cell(row.status),
            )
        )


def _pct_cell(pct: Decimal) -> str:
    return format(shown_pct(pct), "f")


def _recovery_lines(store: Store, window: Window) -> Iterator[str]:
    """``dunning report``'s rows over the window: failures in it, as they stood at its end."""
    for row in build_recovery_report(store, window).rows:
        currency = row.currency

        def amount(minor: int | None, currency: str = currency) -> tuple[str, str]:
            return number_cell(minor), major_cell(minor, currency)

        yield line(
            (
                time_cell(window.start),
                time_cell(window.end),
                text_cell(currency),
                text_cell(row.scope),
                text_cell(row.breakdown),
                text_cell(row.touch),
                text_cell(row.decline_class),
                text_cell(row.decline_code),
                number_cell(row.failed_invoices),
                *amount(row.failed_amount),
                number_cell(row.recovered_invoices),
                *amount(row.recovered_amount),
                "" if row.recovery_rate_pct is None else format(row.recovery_rate_pct, "f"),
                ""
                if row.share_of_recovered_pct is None
                else format(row.share_of_recovered_pct, "f"),
                *amount(row.partially_paid_amount),
                number_cell(row.open_invoices),
                *amount(row.open_amount),
                number_cell(row.exhausted_invoices),
                *amount(row.exhausted_amount),
                number_cell(row.unrecoverable_invoices),
                *amount(row.unrecoverable_amount),
                number_cell(whole_seconds(row.median_time_to_recover)),
                number_cell(whole_seconds(row.p90_time_to_recover)),
                number_cell(row.recovered_time_unknown),
            )
        )


def _chunked_lines(lines: Iterable[str]) -> Iterator[CsvChunk]:
    batch: list[str] = []
    for text in lines:
        batch.append(text)
        if len(batch) >= LINES_PER_CHUNK:
            yield "".join(batch), len(batch)
            batch.clear()
    if batch:
        yield "".join(batch), len(batch)


def export_chunks(
    store: Store, dataset: str, window: Window, *, now: datetime
) -> Generator[CsvChunk, None, None]:
    """The export as (text, rows) chunks: the header first (0 rows), then the body."""
    if dataset not in DATASETS:
        raise BadInput(f"dataset {shown(dataset)} is not one of {', '.join(DATASETS)}")
    yield header_line(dataset), 0
    if dataset == "ledger":
        yield from store.ledger_csv_chunks(window)
    elif dataset == "alerts":
        yield from _chunked_lines(_alert_line(alert) for alert in store.stream_alerts(window))
    elif dataset == "dunning":
        yield from _chunked_lines(_dunning_line(step) for step in store.stream_dunning(window))
    elif dataset == "recovery":
        yield from _chunked_lines(_recovery_lines(store, window))
    else:
        yield from _chunked_lines(_reconciliation_lines(store, window, now))


def export_size(store: Store, dataset: str, window: Window) -> int | None:
    """The rows an export will hold, counted before it streams, for a progress bar (None
    for the reconciliation and the recovery figures, a handful of rows computed at once)."""
    return store.export_row_count(dataset, window)


def write_stream(chunks: Iterable[CsvChunk], stream: TextIO) -> int:
    """Write every chunk; returns the rows written."""
    rows = 0
    for text, count in chunks:
        stream.write(text)
        rows += count
    return rows


def write_file_atomically(
    chunks: Iterable[CsvChunk], path: Path, *, protected: Sequence[Path] = ()
) -> int:
    """Write the export to ``path`` by ``adapters.files``' rules (atomically for a regular
    file, through for a FIFO or device; never over a ``protected`` file); returns the rows.
    """
    rows = 0

    def texts() -> Iterator[str]:
        nonlocal rows
        for text, count in chunks:
            yield text
            rows += count

    try:
        write_file(path, texts(), protected=protected)
    finally:
        # Finish the store's read (its transaction) now, whatever happened to the file.
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
    return rows
