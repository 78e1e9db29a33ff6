"""``dunning report``: what dunning and the operators recovered of the failed payments.

Registered on the ``dunning`` group (``cli/__init__.py`` loads the group from here), in a
module of its own so that the group's other commands and this report change apart. The
dashboard's recovery line and field use its shapes (``recovery_line``, ``row_json``); the
recovery export writes the same rows as CSV (``services.export``).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.cli import params
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.dunning import app
from cloudgreet_billing.cli.output import JsonFlag, emit
from cloudgreet_billing.cli.render import money, when
from cloudgreet_billing.domain.windows import RECOVERY_DAYS

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.domain.recovery import RecoveryReport, RecoveryRow

__all__ = ["app", "duration", "pct_text", "recovery_json", "recovery_line", "row_json"]


def duration(span: timedelta | None) -> str:
    """A span in the units of relative times (``d``, ``h``, ``m``), its two largest:
    ``1d 4h``, ``2h``, ``30m``; ``<1m`` under a minute."""
    if span is None:
        return ""
    minutes = span // timedelta(minutes=1)
    if minutes < 1:
        return "<1m"
    days, rest = divmod(minutes, 24 * 60)
    units = ((days, "d"), *zip(divmod(rest, 60), ("h", "m"), strict=True))
    first = next(n for n, (value, _) in enumerate(units) if value)
    return " ".join(f"{value}{unit}" for value, unit in units[first : first + 2] if value)


def _pct_number(pct: Decimal | None) -> float | None:
    """A percentage for JSON, four places as ``reconcile`` gives its variance."""
    return None if pct is None else float(pct)


def pct_text(pct: Decimal | None) -> str:
    """A percentage for people: two places, half up (as ``reconcile`` shows it)."""
    if pct is None:
        return ""
    return f"{pct.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)}%"


def row_json(row: RecoveryRow) -> dict[str, Any]:
    """One row as ``dunning report --json`` lists it (the export's row, in JSON's units)."""
    # Here, not at the top: --help must not load the recovery records.
    from cloudgreet_billing.domain.recovery import whole_seconds

    return {
        "currency": row.currency,
        "scope": row.scope,
        "breakdown": row.breakdown,
        "touch": row.touch,
        "decline_class": row.decline_class,
        "decline_code": row.decline_code,
        "failed_invoices": row.failed_invoices,
        "failed_amount": row.failed_amount,
        "recovered_invoices": row.recovered_invoices,
        "recovered_amount": row.recovered_amount,
        "recovery_rate_pct": _pct_number(row.recovery_rate_pct),
        "share_of_recovered_pct": _pct_number(row.share_of_recovered_pct),
        "partially_paid_amount": row.partially_paid_amount,
        "open_invoices": row.open_invoices,
        "open_amount": row.open_amount,
        "exhausted_invoices": row.exhausted_invoices,
        "exhausted_amount": row.exhausted_amount,
        "unrecoverable_invoices": row.unrecoverable_invoices,
        "unrecoverable_amount": row.unrecoverable_amount,
        "median_time_to_recover_seconds": whole_seconds(row.median_time_to_recover),
        "p90_time_to_recover_seconds": whole_seconds(row.p90_time_to_recover),
        "recovered_time_unknown": row.recovered_time_unknown,
    }


def recovery_json(report: RecoveryReport) -> dict[str, Any]:
    from cloudgreet_billing.domain.timefmt import iso_z

    return {
        "window": {"from": iso_z(report.window.start), "to": iso_z(report.window.end)},
        "currencies": report.currencies,
        "rows": [row_json(row) for row in report.rows],
    }


def recovery_line(report: RecoveryReport) -> str:
    """``usd 29.66% of $853.00 recovered, eur …``: the dashboard's one line."""
    parts = []
    for currency in report.currencies:
        total = report.total(currency)
        if not total.failed_invoices:
            continue
        parts.append(
            f"{currency} {pct_text(total.recovery_rate_pct)} of "
            f"{money(total.failed_amount, currency)} recovered"
        )
    return ", ".join(parts) or "no failed payments"


def _print_report(report: RecoveryReport, days: int | None, console: Console) -> None:
    from cloudgreet_billing.cli.table import Column, print_table

    span = f"{days} days" if days is not None else "window"
    console.print(
        f"Recovery of payments first failed {when(report.window.start)} → "
        f"{when(report.window.end)} ({span}); rates by amount, exempt customers apart"
    )
    rows = report.rows
    print_table(
        [
            Column("currency", "status"),
            Column("scope", "status"),
            Column("failed", "money"),
            Column("invoices", "number"),
            Column("recovered", "money"),
            Column("paid", "number"),
            Column("rate", "number"),
            Column("partially paid", "money", drop=1),
            Column("open", "money"),
            Column("exhausted", "money"),
            Column("unrecoverable", "money"),
            Column("median", "number", drop=2),
            Column("p90", "number", drop=2),
        ],
        [
            [
                row.currency,
                row.scope,
                money(row.failed_amount, row.currency),
                row.failed_invoices,
                money(row.recovered_amount, row.currency),
                row.recovered_invoices,
                pct_text(row.recovery_rate_pct),
                money(row.partially_paid_amount, row.currency),
                money(row.open_amount, row.currency),
                money(row.exhausted_amount, row.currency),
                money(row.unrecoverable_amount, row.currency),
                duration(row.median_time_to_recover),
                duration(row.p90_time_to_recover),
            ]
            for row in rows
            if row.breakdown == "all"
        ],
        console=console,
    )
    touches = [row for row in rows if row.breakdown == "touch"]
    if touches:
        console.print()  # each table stands apart, on screen and for a pipe
        print_table(
            [
                Column("currency", "status"),
                Column("last touch before payment", "status"),
                Column("recovered", "money"),
                Column("invoices", "number"),
                Column("share", "number"),
                Column("median", "number", drop=1),
            ],
            [
                [
                    row.currency,
                    row.touch,
                    money(row.recovered_amount, row.currency),
                    row.recovered_invoices,
                    pct_text(row.share_of_recovered_pct),
                    duration(row.median_time_to_recover),
                ]
                for row in touches
            ],
            console=console,
        )
    declines = [row for row in rows if row.breakdown == "decline"]
    if declines:
        console.print()
        print_table(
            [
                Column("currency", "status"),
                Column("decline", "status"),
                Column("code", "status"),
                Column("failed", "money"),
                Column("invoices", "number"),
                Column("recovered", "money"),
                Column("paid", "number"),
                Column("rate", "number"),
            ],
            [
                [
                    row.currency,
                    row.decline_class,
                    row.decline_code,
                    money(row.failed_amount, row.currency),
                    row.failed_invoices,
                    money(row.recovered_amount, row.currency),
                    row.recovered_invoices,
                    pct_text(row.recovery_rate_pct),
                ]
                for row in declines
            ],
            console=console,
        )
    unknown = sum(row.recovered_time_unknown for row in rows if row.breakdown == "all")
    if unknown:
        from cloudgreet_billing.cli.output import note
        from cloudgreet_billing.domain.words import plural

        note(f"{plural(unknown, 'recovery', 'recoveries')} without a known payment time")


@app.command("report")
def report(
    ctx: typer.Context,
    days: Annotated[
        int,
        typer.Option(
            "--days",
            parser=params.days,
            help="The window: payments that first failed in the last N days up to now.",
        ),
    ] = RECOVERY_DAYS,
    json_output: JsonFlag = False,
) -> None:
    """Recovery figures per currency: failed, recovered and the rate, by last touch and by
    decline, time to recover, and what is open, exhausted or unrecoverable.

    Counts the invoices whose first failed payment lies in the window; recovered means paid
    in full since. Exempt customers are counted apart, so the rate is dunning's own.
    Amounts are never added across currencies. Read-only.

    Example: cloudgreet-billing dunning report --days 30 --json
    """
    from cloudgreet_billing.cli.output import note
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.recovery import build_recovery_report, recovery_window

    window = recovery_window(utcnow(), days)
    built = build_recovery_report(app_context(ctx).store(), window)
    if not built.rows:
        note(f"no payment failed in the last {days} days")

    def human(console: Console) -> None:
        if built.rows:
            _print_report(built, days, console)

    emit(recovery_json(built), human)
