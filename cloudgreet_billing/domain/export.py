"""CSV export formats: the documented headers and the rules for every cell.

- Lines end with ``\\n``; a cell is quoted (``"…"``, inner quotes doubled) when it holds
  ``"``, ``,``, CR or LF. An absent value is an empty cell.
- Amounts appear twice: ``*_minor`` as an integer in the currency's minor unit, and
  ``*_major`` as an exact decimal string in major units (``-12.34``), next to ``currency``.
  Both stay plain numbers, negative ones included, so spreadsheets sum them.
- Times are ISO 8601 UTC, fixed width with microseconds (``2026-11-24T01:27:32.000000Z``),
  so that sorting the text sorts the times.
- Every text cell that starts with ``=``, ``+``, ``-``, ``@``, tab or CR is prefixed with a
  single quote, so a spreadsheet shows it as text instead of running it as a formula.

The database fast paths (``SqliteStore.ledger_csv_chunks``, ``PostgresStore.ledger_csv_chunks``)
produce exactly ``ledger_line`` for each entry; a test holds them together.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from cloudgreet_billing.domain.ledger import LedgerEntry
from cloudgreet_billing.domain.money import to_major_string

DATASETS: Final = ("ledger", "alerts", "dunning", "reconciliation", "recovery")
#: Text starting with one of these is a formula to a spreadsheet.
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
_NEEDS_QUOTES: Final = ('"', ",", "\r", "\n")

LEDGER_COLUMNS: Final = (
    "id",
    "occurred_at",
    "customer_id",
    "kind",
    "amount_minor",
    "amount_major",
    "currency",
    "invoice_id",
    "description",
    "external_id",
    "created_at",
)
ALERT_COLUMNS: Final = (
    "id",
    "type",
    "status",
    "customer_id",
    "invoice_id",
    "amount_due_minor",
    "amount_due_major",
    "currency",
    "stripe_event_id",
    "attempt_count",
    "last_failure",
    "created_at",
    "updated_at",
    "acknowledged_at",
    "resolved_at",
    "resolution",
)
DUNNING_COLUMNS: Final = (
    "id",
    "invoice_id",
    "customer_id",
    "alert_id",
    "day",
    "channel",
    "template",
    "status",
    "due_at",
    "sent_at",
    "attempts",
    "last_error",
    "reason",
    "created_at",
    "updated_at",
)
RECONCILIATION_COLUMNS: Final = (
    "window_from",
    "window_to",
    "customer_id",
    "currency",
    "stripe_total_minor",
    "stripe_total_major",
    "ledger_total_minor",
    "ledger_total_major",
    "variance_minor",
    "variance_major",
    "variance_pct",
    "status",
)
#: ``dunning report``'s rows (``domain.recovery.RecoveryRow``), one line each.
RECOVERY_COLUMNS: Final = (
    "window_from",
    "window_to",
    "currency",
    "scope",
    "breakdown",
    "touch",
    "decline_class",
    "decline_code",
    "failed_invoices",
    "failed_minor",
    "failed_major",
    "recovered_invoices",
    "recovered_minor",
    "recovered_major",
    "recovery_rate_pct",
    "share_of_recovered_pct",
    "partially_paid_minor",
    "partially_paid_major",
    "open_invoices",
    "open_minor",
    "open_major",
    "exhausted_invoices",
    "exhausted_minor",
    "exhausted_major",
    "unrecoverable_invoices",
    "unrecoverable_minor",
    "unrecoverable_major",
    "median_time_to_recover_seconds",
    "p90_time_to_recover_seconds",
    "recovered_time_unknown",
)
HEADERS: Final = {
    "ledger": LEDGER_COLUMNS,
    "alerts": ALERT_COLUMNS,
    "dunning": DUNNING_COLUMNS,
    "reconciliation": RECONCILIATION_COLUMNS,
    "recovery": RECOVERY_COLUMNS,
}


def quoted(cell: str) -> str:
    """The cell as CSV writes it: quoted only when it must be."""
    if any(mark in cell for mark in _NEEDS_QUOTES):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def text_cell(value: str | None) -> str:
    """Free text, neutralised against formula injection, then quoted as needed."""
    if not value:
        return ""
    if value.startswith(FORMULA_PREFIXES):
        value = "'" + value
    return quoted(value)


def number_cell(value: int | None) -> str:
    return "" if value is None else str(value)


def major_cell(amount: int | None, currency: str | None) -> str:
    """The amount in major units, exact: 1234 usd → ``12.34``; ¥500 → ``500``."""
    return "" if amount is None or currency is None else to_major_string(amount, currency)


def time_cell(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(cells: Iterable[str]) -> str:
    return ",".join(cells) + "\n"


def header_line(dataset: str) -> str:
    return line(HEADERS[dataset])


def ledger_line(entry: LedgerEntry) -> str:
    return line(
        (
            str(entry.id),
            time_cell(entry.occurred_at),
            text_cell(entry.customer_id),
            text_cell(entry.kind),
            str(entry.amount),
            major_cell(entry.amount, entry.currency),
            text_cell(entry.currency),
            text_cell(entry.invoice_id),
            text_cell(entry.description),
            text_cell(entry.external_id),
            time_cell(entry.created_at),
        )
    )
