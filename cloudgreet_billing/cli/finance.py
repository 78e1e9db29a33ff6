"""``reconcile``, ``dashboard``, ``export-csv``: the numbers finance signs off on."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from cloudgreet_billing.cli import params
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, json_mode, note
from cloudgreet_billing.cli.progress import progress_bar, progress_meter
from cloudgreet_billing.cli.render import money, when
from cloudgreet_billing.domain.windows import EXPORT_DAYS, RECONCILIATION_DAYS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from decimal import Decimal

    from rich.console import Console

    from cloudgreet_billing.adapters.store.protocol_finance import OpenAlert, PastDueInvoice
    from cloudgreet_billing.domain.mirror import MirroredInvoice
    from cloudgreet_billing.domain.reconciliation import ReconciliationRow, Window
    from cloudgreet_billing.services.dashboard import Dashboard
    from cloudgreet_billing.services.reconcile import CustomerTrace, ReconcileReport


def _counted(
    chunks: Iterator[tuple[str, int]], advance: Callable[[int], None]
) -> Iterator[tuple[str, int]]:
    """The chunks, each counted on the progress bar as it is handed on to be written."""
    try:
        for text, rows in chunks:
            yield text, rows
            advance(rows)
    finally:
        # Closed here, while the store is still open: a generator left to the garbage
        # collector would be closed after it, and fail on the closed connection.
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _window_json(window: Window) -> dict[str, Any]:
    from cloudgreet_billing.domain.timefmt import iso_z

    return {"from": iso_z(window.start), "to": iso_z(window.end)}


def _pct(value: Decimal) -> float:
    """A percentage for JSON: four places, exact in the printed text."""
    from cloudgreet_billing.domain.reconciliation import shown_pct

    return float(shown_pct(value))


def _row_json(row: ReconciliationRow) -> dict[str, Any]:
    return {
        "customer_id": row.customer_id,
        "currency": row.currency,
        "stripe_total": row.stripe_total,
        "ledger_total": row.ledger_total,
        "variance": row.variance,
        "variance_pct": _pct(row.variance_pct),
        "status": row.status,
    }


def _past_due_json(invoice: PastDueInvoice) -> dict[str, Any]:
    from cloudgreet_billing.domain.timefmt import iso_z

    return {
        "id": invoice.id,
        "customer_id": invoice.customer_id,
        "number": invoice.number,
        "amount_due": invoice.amount_due,
        "amount_remaining": invoice.amount_remaining,
        "currency": invoice.currency,
        "due_date": iso_z(invoice.due_date),
        "attempt_count": invoice.attempt_count,
        "first_failed_at": iso_z(invoice.first_failed_at),
        "hosted_invoice_url": invoice.hosted_invoice_url,
    }


def _alert_json(alert: OpenAlert) -> dict[str, Any]:
    from cloudgreet_billing.domain.timefmt import iso_z

    return {
        "id": alert.id,
        "type": alert.type,
        "status": alert.status,
        "customer_id": alert.customer_id,
        "invoice_id": alert.invoice_id,
        "amount_due": alert.amount_due,
        "currency": alert.currency,
        "created_at": iso_z(alert.created_at),
    }


def _trace_json(trace: CustomerTrace) -> dict[str, Any]:
    from cloudgreet_billing.cli.render import ledger_entry_json

    return {
        "customer_id": trace.customer_id,
        "unmatched_entries": [ledger_entry_json(entry) for entry in trace.unmatched_entries],
        "unmatched_invoice_lines": [
            {
                "invoice_id": line.invoice_id,
                "line_id": line.line_id,
                "description": line.description,
                "amount": line.amount,
                "currency": line.currency,
            }
            for line in trace.unmatched_invoice_lines
        ],
        "invoices_differing": [
            {
                "invoice_id": diff.invoice_id,
                "currency": diff.currency,
                "stripe_amount": diff.stripe_amount,
                "ledger_amount": diff.ledger_amount,
                "variance": diff.variance,
            }
            for diff in trace.invoices_differing
        ],
        "ledger_outside_window": [
            {"invoice_id": item.invoice_id, "currency": item.currency, "amount": item.ledger_amount}
            for item in trace.ledger_outside_window
        ],
        "lines_truncated": trace.lines_truncated,
    }


def _report_json(report: ReconcileReport) -> dict[str, Any]:
    data: dict[str, Any] = {
        "window": _window_json(report.window),
        "threshold_pct": float(report.threshold_pct),
        "source": report.source,
        "invoices_counted": report.invoices_counted,
        "rows": [_row_json(row) for row in report.rows],
        "mismatches": report.mismatches,
        "past_due_invoices": [_past_due_json(invoice) for invoice in report.past_due_invoices],
        "open_alerts": [_alert_json(alert) for alert in report.open_alerts],
    }
    if report.trace is not None:
        data["customer_id"] = report.customer_id
        data["trace"] = _trace_json(report.trace)
    return data


def _print_report(report: ReconcileReport, console: Console) -> None:
    from cloudgreet_billing.cli.table import Column, Styled, print_table
    from cloudgreet_billing.domain.words import plural

    window = report.window
    console.print(
        f"Reconciliation {when(window.start)} → {when(window.end)}, "
        f"Stripe side from the {report.source} ({plural(report.invoices_counted, 'invoice')}), "
        f"threshold {report.threshold_pct}%"
    )
    print_table(
        [
            Column("customer", "id"),
            Column("currency", "status"),
            Column("stripe", "money"),
            Column("ledger", "money"),
            Column("variance", "money"),
            Column("variance %", "number"),
            Column("status", "status"),
        ],
        [
            [
                row.customer_id,
                row.currency,
                money(row.stripe_total, row.currency),
                money(row.ledger_total, row.currency),
                money(row.variance, row.currency),
                f"{_pct(row.variance_pct):.2f}",
                Styled(row.status.upper()) if row.is_mismatch else row.status,
            ]
            for row in report.rows
        ],
        console=console,
        empty="nothing invoiced or recorded in the window",
    )
    if report.trace is not None:
        _print_trace(report.trace, console)
    if report.past_due_invoices:
        console.print()  # each table stands apart, on screen and for a pipe
        print_table(
            [
                Column("past-due invoice", "id"),
                Column("customer", "id"),
                Column("remaining", "money"),
                Column("due", "time", drop=1),
                Column("attempts", "number"),
            ],
            [
                [
                    invoice.id,
                    invoice.customer_id,
                    Styled(money(invoice.amount_remaining, invoice.currency)),
                    invoice.due_date,
                    invoice.attempt_count,
                ]
                for invoice in report.past_due_invoices
            ],
            console=console,
        )
    if report.open_alerts:
        console.print()
        print_table(
            [
                Column("open alert", "number"),
                Column("type", "status"),
                Column("customer", "id"),
                Column("invoice", "id"),
                Column("amount", "money"),
                Column("since", "time", drop=1),
            ],
            [
                [
                    alert.id,
                    alert.type,
                    alert.customer_id,
                    alert.invoice_id,
                    money(alert.amount_due, alert.currency),
                    alert.created_at,
                ]
                for alert in report.open_alerts
            ],
            console=console,
        )
    verdict = (
        f"{plural(report.mismatches, 'mismatch', 'mismatches')} over {report.threshold_pct}%"
        if report.mismatches
        else "every row within the threshold"
    )
    console.print(
        f"{verdict}; {plural(len(report.past_due_invoices), 'past-due invoice')}, "
        f"{plural(len(report.open_alerts), 'open alert')}"
    )


def _print_trace(trace: CustomerTrace, console: Console) -> None:
    from cloudgreet_billing.cli.table import Column, print_table

    if trace.unmatched_entries:
        console.print()
        print_table(
            [
                Column("unmatched ledger entry", "number"),
                Column("occurred", "time"),
                Column("kind", "status"),
                Column("amount", "money"),
                Column("invoice", "id"),
                Column("note", "prose", drop=1),
            ],
            [
                [
                    entry.id,
                    entry.occurred_at,
                    entry.kind,
                    money(entry.amount, entry.currency),
                    entry.invoice_id,
                    entry.description,
                ]
                for entry in trace.unmatched_entries
            ],
            console=console,
        )
    if trace.unmatched_invoice_lines:
        console.print()
        print_table(
            [
                Column("invoice with no ledger entry", "id"),
                Column("line", "id"),
                Column("description", "prose", drop=1),
                Column("amount", "money"),
            ],
            [
                [line.invoice_id, line.line_id, line.description, money(line.amount, line.currency)]
                for line in trace.unmatched_invoice_lines
            ],
            console=console,
        )
    if trace.invoices_differing:
        console.print()
        print_table(
            [
                Column("invoice", "id"),
                Column("stripe", "money"),
                Column("ledger", "money"),
                Column("variance", "money"),
            ],
            [
                [
                    diff.invoice_id,
                    money(diff.stripe_amount, diff.currency),
                    money(diff.ledger_amount, diff.currency),
                    money(diff.variance, diff.currency),
                ]
                for diff in trace.invoices_differing
            ],
            console=console,
        )
    for item in trace.ledger_outside_window:
        console.print(
            f"{item.invoice_id}: {money(item.ledger_amount, item.currency)} of its ledger "
            "entries fall outside the window"
        )
    for invoice_id in trace.lines_truncated:
        console.print(f"{invoice_id}: Stripe listed only its first lines")
    if not (
        trace.unmatched_entries
        or trace.unmatched_invoice_lines
        or trace.invoices_differing
        or trace.ledger_outside_window
    ):
        console.print(f"{trace.customer_id}: every entry matches its invoice")


def reconcile(
    ctx: typer.Context,
    days: Annotated[
        int,
        typer.Option("--days", parser=params.days, help="The window: the last N days up to now."),
    ] = RECONCILIATION_DAYS,
    threshold: Annotated[
        str,
        typer.Option(
            "--threshold",
            help="Variance in percent above which a row is a mismatch (exit 4).",
            metavar="PCT",
        ),
    ] = "1.0",
    invoices_file: Annotated[
        str | None,
        typer.Option(
            "--invoices-file",
            help="Take the Stripe side from a saved JSON list of invoices or an API list "
            "page (- reads stdin) instead of the API.",
            metavar="PATH",
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Take the Stripe side from the local mirror; no API call."),
    ] = False,
    customer: Annotated[
        str | None,
        typer.Option(
            "--customer",
            help="Only this cus_…, traced invoice by invoice: unmatched entries, invoice "
            "lines with no entry, and invoices whose ledger sum differs.",
            callback=params.customer_id,
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Compare Stripe's invoiced totals with the ledger, per customer and currency.

    Draft and void invoices are left out; an invoice counts total_excluding_tax (or total).
    Exits 4 when any row's variance is over the threshold, so cron can page someone.

    Example: cloudgreet-billing reconcile --days 30 --threshold 0.5 --json
    """
    from decimal import Decimal, InvalidOperation

    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.inputs import shown
    from cloudgreet_billing.domain.ledger import check_customer_id
    from cloudgreet_billing.errors import BadInput, ExitCode
    from cloudgreet_billing.services import reconcile as service

    try:
        threshold_pct = Decimal(threshold.strip())
    except InvalidOperation:
        raise BadInput(f"--threshold {shown(threshold)} is not a number", hint="e.g. 1.0") from None
    if not threshold_pct.is_finite() or threshold_pct < 0:
        raise BadInput(f"--threshold {shown(threshold)} must be a percentage of 0 or more")
    if invoices_file is not None and offline:
        raise BadInput("--invoices-file and --offline are two sources; give one")
    customer_id = check_customer_id(customer) if customer else None
    context = app_context(ctx)
    now = utcnow()
    window = service.window_ending(now, days)
    store = context.store()
    invoices: Iterable[MirroredInvoice] | None
    if offline:
        invoices, source = None, "mirror"
    elif invoices_file is not None:
        invoices, source = service.read_invoices_file(invoices_file), "file"
    else:
        from cloudgreet_billing.bootstrap import open_gateway
        from cloudgreet_billing.cli.output import stripe_is_slow

        gateway = open_gateway(context.settings, batch=True, on_slow=stripe_is_slow)
        note(f"listing invoices from Stripe ({gateway.mode} mode)")
        invoices, source = service.pull_invoices(gateway, store, window, now), "api"
    report = service.reconcile(
        store,
        window=window,
        threshold_pct=threshold_pct,
        now=now,
        invoices=invoices,
        source=source,
        customer_id=customer_id,
    )
    emit(_report_json(report), lambda console: _print_report(report, console))
    if report.mismatches:
        raise typer.Exit(ExitCode.NEEDS_ATTENTION)


def _dashboard_json(board: Dashboard) -> dict[str, Any]:
    from cloudgreet_billing.domain.timefmt import iso_z

    age = board.last_sync_age
    return {
        "generated_at": iso_z(board.generated_at),
        "mrr": board.mrr,
        "mrr_subscriptions": board.mrr_subscriptions,
        "booking_fees_30d": board.booking_fees_30d,
        "credit_adjustments_30d": board.credit_adjustments_30d,
        "open_alerts": board.open_alerts,
        "past_due": {"count": board.past_due_count, "amounts": board.past_due_amounts},
        "dunning_due": board.dunning_due_today,
        "dunning_needs_review": board.dunning_needs_review,
        "dunning_unreachable": board.dunning_unreachable,
        "paused": board.pause.paused,
        "pause_reason": board.pause.reason if board.pause.paused else None,
        "paused_by": board.pause.actor if board.pause.paused else None,
        "paused_at": board.pause.at if board.pause.paused else None,
        "last_sync_at": iso_z(board.last_sync_at),
        "last_sync_age_seconds": None if age is None else int(age.total_seconds()),
        "quarantined_events": board.quarantined_events,
        "warnings": board.warnings,
        "mrr_notes": board.mrr_notes,
        "recovery_30d": _recovery_json(board),
    }


def _recovery_json(board: Dashboard) -> dict[str, Any]:
    """Per currency, the recovery figures ``dunning report`` gives (exempt customers apart)."""
    from cloudgreet_billing.cli.dunning_report import row_json

    if board.recovery is None:
        return {}
    fields = (
        "failed_invoices",
        "failed_amount",
        "recovered_invoices",
        "recovered_amount",
        "recovery_rate_pct",
    )
    return {
        currency: {
            name: value
            for name, value in row_json(board.recovery.total(currency)).items()
            if name in fields
        }
        for currency in board.recovery.currencies
    }


def _amounts(amounts: dict[str, int]) -> str:
    return ", ".join(money(amount, currency) for currency, amount in amounts.items()) or "none"


def _recovery_line(board: Dashboard) -> str:
    from cloudgreet_billing.cli.dunning_report import recovery_line

    return "not computed" if board.recovery is None else recovery_line(board.recovery)


def _print_dashboard(board: Dashboard, console: Console) -> None:
    from cloudgreet_billing.cli.table import Column, Styled, print_table
    from cloudgreet_billing.domain.words import plural

    alerts = ", ".join(f"{kind} {count}" for kind, count in board.open_alerts.items())
    past_due = f"{board.past_due_count} ({_amounts(board.past_due_amounts)})"
    figures: list[list[str | Styled]] = [
        ["MRR", _amounts(board.mrr)],
        ["subscriptions counted", str(board.mrr_subscriptions)],
        ["booking fees (30 days)", _amounts(board.booking_fees_30d)],
        ["credit adjustments (30 days)", _amounts(board.credit_adjustments_30d)],
        ["open alerts", alerts or "none"],
        ["past-due invoices", Styled(past_due) if board.past_due_count else past_due],
        [
            "dunning",
            f"{board.dunning_due_today} due today, {board.dunning_needs_review} "
            f"{'needs' if board.dunning_needs_review == 1 else 'need'} review, "
            f"{board.dunning_unreachable} unreachable",
        ],
        [
            "dunning paused",
            Styled(f"yes: {board.pause.reason or 'no reason given'}", "bold yellow")
            if board.pause.paused
            else "no",
        ],
        ["recovery (30 days)", _recovery_line(board)],
        ["last sync", when(board.last_sync_at) or "never"],
        [
            "quarantined events",
            f"{plural(board.quarantined_events, 'event')} (see: quarantine list)"
            if board.quarantined_events
            else "none",
        ],
    ]
    print_table(
        [Column("figure", "text"), Column("value", "prose")],
        figures,
        console=console,
        show_header=False,
    )
    for warning in board.warnings:
        console.print(f"warning: {warning}")
    for line in board.mrr_notes:
        console.print(f"MRR note: {line}")


def dashboard(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """MRR per currency, 30-day booking fees and credits, open alerts, past-due invoices,
    dunning due today, the pause switch, and how old the last sync is.

    Example: cloudgreet-billing dashboard --json
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dashboard import build_dashboard

    board = build_dashboard(app_context(ctx).store(), now=utcnow())
    emit(_dashboard_json(board), lambda console: _print_dashboard(board, console))


def export_csv(
    ctx: typer.Context,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="ledger, alerts, dunning, reconciliation or recovery.",
            metavar="NAME",
        ),
    ] = "ledger",
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            parser=params.days,
            help=f"The last N days up to now (default {EXPORT_DAYS}; "
            f"{RECONCILIATION_DAYS} for reconciliation and recovery, as reconcile and "
            "dunning report).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Window start, ISO 8601 (inclusive).", callback=params.instant
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Window end, ISO 8601 (exclusive; default now).",
            callback=params.instant,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write to this file instead of stdout.", dir_okay=False
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Export a dataset as CSV, streamed in constant memory.

    The header line of each dataset, in order (stable; new columns only at the end):

    \b
    ledger (entries that occurred in the window):
      id, occurred_at, customer_id, kind, amount_minor, amount_major,
      currency, invoice_id, description, external_id, created_at
    alerts (created in the window):
      id, type, status, customer_id, invoice_id, amount_due_minor,
      amount_due_major, currency, stripe_event_id, attempt_count,
      last_failure, created_at, updated_at, acknowledged_at,
      resolved_at, resolution
    dunning (steps due in the window):
      id, invoice_id, customer_id, alert_id, day, channel, template,
      status, due_at, sent_at, attempts, last_error, reason,
      created_at, updated_at
    reconciliation (the mirror against the ledger, threshold 1.0%):
      window_from, window_to, customer_id, currency, stripe_total_minor,
      stripe_total_major, ledger_total_minor, ledger_total_major,
      variance_minor, variance_major, variance_pct, status
    recovery (dunning report's rows: payments first failed in the window):
      window_from, window_to, currency, scope, breakdown, touch,
      decline_class, decline_code, failed_invoices, failed_minor,
      failed_major, recovered_invoices, recovered_minor, recovered_major,
      recovery_rate_pct, share_of_recovered_pct, partially_paid_minor,
      partially_paid_major, open_invoices, open_minor, open_major,
      exhausted_invoices, exhausted_minor, exhausted_major,
      unrecoverable_invoices, unrecoverable_minor, unrecoverable_major,
      median_time_to_recover_seconds, p90_time_to_recover_seconds,
      recovered_time_unknown

    *_minor: integer in the currency's minor unit; *_major: the same amount
    as an exact decimal in major units. Times: ISO 8601 UTC, fixed width
    (2026-11-24T09:00:00.000000Z). Text cells starting with = + - @, tab or
    CR get a leading ' so spreadsheets never run them. Lines end with LF.
    With -o the file appears whole or not at all (written aside, then
    renamed; mode 0600). A FIFO or a device (/dev/stdout) is written
    through; a symlink is followed and its target replaced. The store's own
    files (billing.db, -wal, -shm, -journal) are refused (exit 2).

    Example: cloudgreet-billing export-csv --since 2026-11-01 -o nov.csv
    """
    from cloudgreet_billing.adapters.files import (
        refuse_store_descriptor,
        refuse_store_files,
    )
    from cloudgreet_billing.bootstrap import store_files_of
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.export import DATASETS
    from cloudgreet_billing.domain.inputs import shown
    from cloudgreet_billing.domain.timefmt import parse_instant
    from cloudgreet_billing.domain.words import plural
    from cloudgreet_billing.errors import BadInput
    from cloudgreet_billing.services import export as service

    if dataset not in DATASETS:
        raise BadInput(f"--dataset {shown(dataset)} is not one of {', '.join(DATASETS)}")
    to_stdout = output is None or _is_stdout(output)
    if to_stdout and json_mode():
        raise BadInput(
            "export-csv writes the CSV itself to stdout; --json needs -o FILE",
            hint="add -o export.csv to get a JSON summary",
        )
    now = utcnow()
    window = service.export_window(
        now,
        dataset=dataset,
        days=days,
        since=parse_instant(since, field="--since") if since is not None else None,
        until=parse_instant(until, field="--until") if until is not None else None,
    )
    context = app_context(ctx)
    protected = store_files_of(context.settings)
    # Before the store is opened: a refused write touches nothing at all.
    if output is not None:
        refuse_store_files(output, protected)
    elif _has_descriptor(sys.stdout):
        refuse_store_descriptor(sys.stdout.fileno(), "stdout", protected)
    store = context.store()
    chunks = service.export_chunks(store, dataset, window, now=now)

    if output is None and sys.stdout.isatty():
        # The CSV itself is on the terminal: a bar would be drawn over it.
        rows = _export(chunks, output, None, protected)
    else:
        with _export_progress(dataset, service.export_size(store, dataset, window)) as advance:
            rows = _export(chunks, output, advance, protected)
    if rows is None:
        return
    if to_stdout:
        # -o /dev/stdout (or a file that is stdout) carries the CSV: the summary goes to
        # stderr, as without -o, so that it cannot end up inside the data.
        note(
            f"exported {plural(rows, dataset + ' row')} ({when(window.start)} → {when(window.end)})"
        )
        return
    emit(
        {
            "dataset": dataset,
            "path": str(output),
            "rows": rows,
            "window": _window_json(window),
        },
        lambda console: console.print(
            f"wrote {plural(rows, dataset + ' row')} ({when(window.start)} → {when(window.end)}) "
            f"to {output}"
        ),
    )


@contextmanager
def _export_progress(dataset: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """Rows written: of the total counted before the export, with the percentage and the
    time left, or a plain count when there is none."""
    if total is None:
        with progress_bar(f"exporting {dataset} rows", stdout_is_data=True) as advance:
            yield advance
        return
    with progress_meter(f"exporting {dataset}", total, stdout_is_data=True) as meter:
        if meter is None:
            yield None
            return
        written = 0

        def advance_rows(count: int) -> None:
            nonlocal written
            written += count
            meter(written, f"{written:,} of {total:,} rows")

        yield advance_rows


def _export(
    chunks: Iterator[tuple[str, int]],
    output: Path | None,
    advance: Callable[[int], None] | None,
    protected: Any,
) -> int | None:
    """Write the export; the rows written, or None when the reader of stdout went away."""
    from cloudgreet_billing.adapters.files import FileWriteError
    from cloudgreet_billing.services import export as service

    if advance is not None:
        chunks = _counted(chunks, advance)
    if output is not None:
        return service.write_file_atomically(chunks, output, protected=protected)
    try:
        rows = service.write_stream(chunks, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return None
    except OSError as exc:
        # What is still buffered cannot be written either: drop it, so that leaving
        # does not fail on it a second time (exit 120).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise FileWriteError(
            f"cannot write the export to stdout: {exc.strerror or exc}",
            hint="free some space where stdout goes, or use -o FILE",
        ) from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return rows


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` is where stdout goes (``/dev/stdout``, ``/dev/fd/1``, or the very
    file stdout was redirected to)."""
    if not _has_descriptor(sys.stdout):
        return False
    try:
        return os.path.samestat(path.stat(), os.fstat(sys.stdout.fileno()))
    except OSError:
        return False


def _has_descriptor(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError):
        return False
    return True
