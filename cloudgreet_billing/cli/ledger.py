"""``ledger add | import | list``: the usage ledger (``billing_usage_ledger``)."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, note
from cloudgreet_billing.cli.progress import progress_bar
from cloudgreet_billing.cli.render import ledger_entry_json, money, when
from cloudgreet_billing.domain.words import plural

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console

    from cloudgreet_billing.cli.context import AppContext

app = typer.Typer(help="Record, import and list usage-ledger entries.", no_args_is_help=True)

KIND_HELP = "subscription, booking_fee or credit_adjustment."


@app.command("add")
def add(
    ctx: typer.Context,
    customer: Annotated[str, typer.Option("--customer", help="Stripe customer id (cus_…).")],
    kind: Annotated[str, typer.Option("--kind", help=KIND_HELP)],
    amount: Annotated[
        str,
        typer.Option(
            "--amount",
            help="In major units (12.34; ¥500 is 500). Negative only for credit_adjustment.",
        ),
    ],
    currency: Annotated[str, typer.Option("--currency", help="ISO currency code.")] = "usd",
    occurred_at: Annotated[
        str | None,
        typer.Option("--occurred-at", help="ISO 8601 time (default: now). No offset means UTC."),
    ] = None,
    invoice: Annotated[
        str | None, typer.Option("--invoice", help="The Stripe invoice (in_…) it belongs to.")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="Free text.")] = None,
    external_id: Annotated[
        str | None,
        typer.Option(
            "--external-id",
            help="Your id for the entry: adding the same entry again is a no-op; reusing "
            "the id with other values is refused (exit 2).",
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
        occurred_at=occurred_at or now,
        invoice_id=invoice,
        description=description,
        external_id=external_id,
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
            help="CSV with columns customer_id,kind,amount,currency,occurred_at"
            "[,invoice_id,description,external_id]; - reads stdin.",
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
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.errors import BadInput
    from cloudgreet_billing.services.ledger import import_csv

    context = app_context(ctx)
    store = context.store()
    now = utcnow()
    with ExitStack() as files, progress_bar("importing rows") as progress:
        if file == "-":
            stream, source, size = sys.stdin, "stdin", None
        else:
            path = Path(file)
            if not path.is_file():
                raise BadInput(f"{file} is not a file", hint="give the path of a CSV file")
            stream = files.enter_context(path.open(encoding="utf-8-sig", newline=""))
            source, size = path.name, path.stat().st_size
        report = import_csv(
            store,
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
        window = store.ledger_created_window(now)
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
    customer: Annotated[str | None, typer.Option("--customer", help="Only this cus_….")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help=KIND_HELP)] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Entries at or after this ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Entries before this ISO time.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    json_output: JsonFlag = False,
) -> None:
    """List ledger entries, newest first."""
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
