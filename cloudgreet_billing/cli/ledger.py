"""``ledger add | import | list``: the usage ledger (``billing_usage_ledger``)."""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from cloudgreet_billing.cli import params
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, note
from cloudgreet_billing.cli.progress import progress_bar, progress_meter
from cloudgreet_billing.cli.render import ledger_entry_json, money, when
from cloudgreet_billing.domain.words import plural

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console

    from cloudgreet_billing.cli.context import AppContext
    from cloudgreet_billing.services import Progress

app = typer.Typer(
    help="Record, import and list usage-ledger entries.\n\n"
    "Example: cloudgreet-billing ledger import usage.csv",
    no_args_is_help=True,
)

KIND_HELP = "subscription, booking_fee or credit_adjustment."


@app.command("add")
def add(
    ctx: typer.Context,
    customer: Annotated[
        str,
        typer.Option("--customer", help="Stripe customer id (cus_…).", callback=params.customer_id),
    ],
    kind: Annotated[str, typer.Option("--kind", help=KIND_HELP)],
    amount: Annotated[
        str,
        typer.Option(
            "--amount",
            help="In major units (12.34; ¥500 is 500). Negative only for credit_adjustment.",
        ),
    ],
    currency: Annotated[
        str, typer.Option("--currency", help="ISO currency code.", callback=params.currency)
    ] = "usd",
    occurred_at: Annotated[
        str | None,
        typer.Option(
            "--occurred-at",
            help="ISO 8601 time (default: now). No offset means UTC.",
            callback=params.instant,
        ),
    ] = None,
    invoice: Annotated[
        str | None,
        typer.Option(
            "--invoice",
            help="The Stripe invoice (in_…) it belongs to.",
            callback=params.invoice_id,
        ),
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", help="Free text.", callback=params.text)
    ] = None,
    external_id: Annotated[
        str | None,
        typer.Option(
            "--external-id",
            help="Your id for the entry: adding the same entry again is a no-op; reusing "
            "the id with other values is refused (exit 2).",
            callback=params.external_id,
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Record one ledger entry.

    Example: cloudgreet-billing ledger add --customer cus_123 --kind booking_fee --amount 2.50
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.ledger import make_draft
    from cloudgreet_billing.services.ledger import record_entry

    now = utcnow()
    draft = make_draft(
        customer_id=customer,
        kind=kind,
        amount=amount,
        currency=currency,
        occurred_at=now if occurred_at is None else occurred_at,
        invoice_id=invoice,
        description=description,
        external_id=external_id,
        now=now,
    )
    context = app_context(ctx)
    entry, created = record_entry(context.store(), draft, now=now)
    if created:
        _check_thresholds(context, entry.occurred_at, entry.occurred_at, now)

    def human(console: Console) -> None:
        verb = "recorded" if created else "already recorded (same --external-id)"
        console.print(
            f"{verb}: entry {entry.id}, {entry.customer_id} {entry.kind} "
            f"{money(entry.amount, entry.currency)} at {when(entry.occurred_at)}"
        )

    emit({**ledger_entry_json(entry), "created": created}, human)


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            help="CSV with the columns customer_id, kind, amount, currency, occurred_at "
            "and, if you have them, invoice_id, description, external_id; - reads stdin.",
            metavar="FILE.csv",
        ),
    ],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check every row, against the ledger too; write nothing."),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Import a CSV all-or-nothing; bad rows are reported by line number.

    A row that repeats an entry under its external_id (already in the ledger, or on an
    earlier line) is skipped, so re-importing a file is safe. A row that reuses an
    external_id with another customer, kind, amount, currency, time or invoice fails the
    import (exit 2), naming its line and both versions.

    Example: cloudgreet-billing ledger import usage-2026-11.csv --dry-run
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.errors import BadInput
    from cloudgreet_billing.services.ledger import import_csv

    context = app_context(ctx)
    now = utcnow()
    with ExitStack() as files:
        if file == "-":
            stream, source, size = sys.stdin, "stdin", _regular_file_size(sys.stdin)
        else:
            path = Path(file)
            if not path.is_file():
                raise BadInput(f"{file} is not a file", hint="give the path of a CSV file")
            stream = files.enter_context(path.open(encoding="utf-8-sig", newline=""))
            source, size = path.name, path.stat().st_size
        progress = files.enter_context(_import_progress(stream, source, size))
        report = import_csv(
            context.store,
            stream,
            source=source,
            now=now,
            actor=context.settings.actor,
            dry_run=dry_run,
            # The file's size lets the store choose its bulk-load path for a large file.
            size_bytes=size,
            progress=progress,
        )

    if report.inserted and not report.dry_run:
        window = context.store().ledger_created_window(now)
        if window is not None:
            _check_thresholds(context, *window, now)

    def human(console: Console) -> None:
        if report.dry_run:
            valid = "is valid" if report.rows == 1 else "are valid"
            console.print(
                f"{report.source}: {plural(report.rows, 'row')} {valid}; {report.would_insert:,} "
                f"would be imported, {report.duplicates:,} already in the ledger; nothing written"
            )
        else:
            console.print(
                f"{report.source}: {plural(report.rows, 'row')}, {report.inserted:,} imported, "
                f"{report.duplicates:,} already in the ledger"
            )

    emit(
        {
            "source": report.source,
            "rows": report.rows,
            "inserted": report.inserted,
            "duplicates": report.duplicates,
            "dry_run": report.dry_run,
            **({"would_insert": report.would_insert} if report.dry_run else {}),
        },
        human,
    )


def _regular_file_size(stream: TextIO) -> int | None:
    """The bytes left in ``stream`` when it is a regular file (``< usage.csv``); None for a
    pipe or a terminal, whose size nobody knows in advance."""
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return max(status.st_size - os.lseek(stream.fileno(), 0, os.SEEK_CUR), 0)


@contextmanager
def _import_progress(stream: TextIO, source: str, size: int | None) -> Iterator[Progress | None]:
    """Rows read, as a bar: by bytes of the file with a percentage and the time left when
    its size is known, else a count of rows."""
    binary = getattr(stream, "buffer", None)
    if size is None or binary is None:
        with progress_bar("importing rows") as advance:
            yield advance
        return
    start = binary.tell()
    with progress_meter(f"importing {source}", size) as meter:
        if meter is None:
            yield None
            return
        rows = 0

        def advance_rows(count: int) -> None:
            nonlocal rows
            rows += count
            # Where the reader is in the file: the CSV reader is ahead of it by at most its
            # read buffer (8 KiB), which a bar cannot show.
            meter(binary.tell() - start, f"{rows:,} rows")

        yield advance_rows


def _check_thresholds(context: AppContext, first: datetime, last: datetime, now: datetime) -> None:
    """Raise threshold_exceeded alerts for ``BILLING_CONFIG``'s ledger thresholds."""
    from cloudgreet_billing.services.thresholds import check_ledger_thresholds, load_thresholds

    rules = load_thresholds(context.settings.config_path)
    opened = check_ledger_thresholds(
        context.store(), rules, first=first, last=last, actor=context.settings.actor, now=now
    )
    for alert in opened:
        note(f"alert {alert.id} opened: {alert.last_failure}")


@app.command("list")
def list_(
    ctx: typer.Context,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only this cus_….", callback=params.customer_id)
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help=KIND_HELP)] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Entries at or after this ISO time.", callback=params.instant),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Entries before this ISO time.", callback=params.instant),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", parser=params.limit, help="At most this many.")
    ] = 50,
    json_output: JsonFlag = False,
) -> None:
    """List ledger entries, newest first.

    Example: cloudgreet-billing ledger list --customer cus_QpL8HLkdIwHu7i --since 2026-11-01
    """
    from cloudgreet_billing.adapters.store.protocol_ledger import LedgerQuery
    from cloudgreet_billing.cli.table import Column, left_out, print_table
    from cloudgreet_billing.domain.ledger import check_customer_id, check_kind
    from cloudgreet_billing.domain.timefmt import parse_window
    from cloudgreet_billing.services.ledger import count_entries, list_entries

    start, end = parse_window(since, until)
    query = LedgerQuery(
        customer_id=check_customer_id(customer) if customer else None,
        kind=check_kind(kind) if kind else None,
        since=start,
        until=end,
        limit=limit,
    )
    store = app_context(ctx).store()
    entries = list_entries(store, query)
    if len(entries) >= limit:
        left_out(len(entries), count_entries(store, query))

    def human(console: Console) -> None:
        columns = [
            Column("id", "number"),
            Column("occurred", "time"),
            Column("customer", "id"),
            Column("kind", "status"),
            Column("amount", "money"),
            Column("invoice", "id"),
            Column("description", "prose", drop=1),
        ]
        rows = [
            [
                entry.id,
                entry.occurred_at,
                entry.customer_id,
                entry.kind,
                money(entry.amount, entry.currency),
                entry.invoice_id,
                entry.description,
            ]
            for entry in entries
        ]
        print_table(columns, rows, console=console, empty="no ledger entries match")

    emit([ledger_entry_json(entry) for entry in entries], human)
