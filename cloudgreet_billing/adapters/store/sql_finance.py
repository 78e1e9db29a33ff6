"""Finance read models: reconciliation totals, dashboard figures, CSV exports.

Totals are ``GROUP BY`` queries: a year of ledger rows never crosses into Python. Exports
stream through ``_stream`` (the dialect decides how: SQLite steps its cursor, PostgreSQL
uses a server-side cursor), and the ledger export's lines can be built by the database
itself from the SQL cell expressions below (``domain.export`` is the specification).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cloudgreet_billing.adapters.store.sql_base import chunked
from cloudgreet_billing.adapters.store.sql_ledger import LEDGER_COLUMNS, LedgerSql
from cloudgreet_billing.adapters.store.sql_mirror import SUBSCRIPTION_COLUMNS, MirrorSql
from cloudgreet_billing.domain.export import (
    ALERT_COLUMNS,
    DUNNING_COLUMNS,
    FORMULA_PREFIXES,
    ledger_line,
)
from cloudgreet_billing.domain.ledger import LedgerEntry
from cloudgreet_billing.domain.money import THREE_DECIMAL, ZERO_DECIMAL
from cloudgreet_billing.domain.statuses import COUNTED_STATUSES, NOT_BILLED_STATUSES

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_finance import (
        DunningWorkload,
        OpenAlert,
        PastDueInvoice,
    )
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription
    from cloudgreet_billing.domain.reconciliation import TotalsKey, Window

#: Rows fetched per round trip while streaming.
STREAM_BATCH: Final = 5_000
#: Ids per ``IN (…)`` list, under every engine's parameter limit.
IDS_PER_QUERY: Final = 500

_LEDGER_FIELDS: Final = f"id, {LEDGER_COLUMNS}"
_WINDOW: Final = "occurred_at >= ? AND occurred_at < ?"
#: Each streamed export's table and the time its window is on.
_EXPORT_WINDOWS: Final = {
    "ledger": ("billing_usage_ledger", "occurred_at"),
    "alerts": ("billing_alerts", "created_at"),
    "dunning": ("billing_dunning_events", "due_at"),
}
#: Time, then the ledger's time index key, then id: SQLite keeps the rowid at the end of
#: every index entry, so this order is read straight off the index with no sort step.
LEDGER_EXPORT_ORDER: Final = "occurred_at, customer_id, currency, amount, kind, id"
#: The alert export's columns, with its two amount cells read from the one column.
ALERT_FIELDS: Final = tuple(
    dict.fromkeys(
        "amount_due" if name.startswith("amount_due_") else name for name in ALERT_COLUMNS
    )
)
ALERT_TIMES: Final = frozenset({"created_at", "updated_at", "acknowledged_at", "resolved_at"})
#: The dunning export's columns are the table's own, so the store selects exactly them.
DUNNING_FIELDS: Final = DUNNING_COLUMNS
DUNNING_TIMES: Final = frozenset({"due_at", "sent_at", "created_at", "updated_at"})
# Open, and either overdue or already failed once: what finance chases.
_PAST_DUE: Final = (
    "status = 'open' AND ((due_date IS NOT NULL AND due_date < ?) "
    "OR attempt_count > 0 OR first_failed_at IS NOT NULL)"
)
_NOT_BILLED: Final = ", ".join(f"'{status}'" for status in sorted(NOT_BILLED_STATUSES))
_RECURRING: Final = ", ".join(f"'{status}'" for status in sorted(COUNTED_STATUSES))
#: Invoices that bill, created in the window (its start and end are the parameters).
_BILLED_IN_WINDOW: Final = (
    f"stripe_created >= ? AND stripe_created < ? AND status NOT IN ({_NOT_BILLED})"
)


def _codes(currencies: frozenset[str]) -> str:
    return ", ".join(f"'{code}'" for code in sorted(currencies))


def _window_for(window: Window, customer_id: str | None) -> tuple[str, list[Any]]:
    """The window's parameters, and the extra condition and parameter for one customer."""
    params: list[Any] = [window.start, window.end]
    if customer_id is None:
        return "", params
    return " AND customer_id = ?", [*params, customer_id]


class FinanceSql(MirrorSql, LedgerSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    # --- dialect hooks --------------------------------------------------------
    def _stream(self, query: str, params: Sequence[Any] = ()) -> Iterator[Sequence[Any]]:
        """Rows one batch at a time, never the whole result at once."""
        cursor: Any = self._execute(query, params)
        while rows := cursor.fetchmany(STREAM_BATCH):
            yield from rows

    def _sql_char(self, code: int) -> str:
        """An SQL expression for the character with this code (``char`` / ``chr``)."""
        raise NotImplementedError

    def _sql_time_cell(self, column: str) -> str:
        """An SQL expression rendering a stored time as ``domain.export.time_cell`` does."""
        raise NotImplementedError

    # --- reconciliation -------------------------------------------------------
    def ledger_window_totals(
        self, window: Window, customer_id: str | None = None
    ) -> dict[TotalsKey, int]:
        only, params = _window_for(window, customer_id)
        rows = self._execute(
            "SELECT customer_id, currency, SUM(amount) FROM billing_usage_ledger "
            f"WHERE {_WINDOW}{only} GROUP BY customer_id, currency",
            params,
        ).fetchall()
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def mirror_invoice_totals(
        self, window: Window, customer_id: str | None = None
    ) -> dict[TotalsKey, int]:
        only, params = _window_for(window, customer_id)
        rows = self._execute(
            "SELECT customer_id, currency, SUM(COALESCE(total_excluding_tax, total)) "
            f"FROM billing_invoices WHERE {_BILLED_IN_WINDOW}{only} GROUP BY customer_id, currency",
            params,
        ).fetchall()
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def mirror_invoice_count(self, window: Window, customer_id: str | None = None) -> int:
        only, params = _window_for(window, customer_id)
        row = self._execute(
            f"SELECT count(*) FROM billing_invoices WHERE {_BILLED_IN_WINDOW}{only}",
            params,
        ).fetchone()
        return int(row[0]) if row else 0

    def mirror_invoices(self, window: Window, customer_id: str) -> list[MirroredInvoice]:
        rows = self._execute(
            "SELECT status, raw FROM billing_invoices WHERE customer_id = ? "
            "AND stripe_created >= ? AND stripe_created < ? ORDER BY stripe_created, id",
            (customer_id, window.start, window.end),
        ).fetchall()
        from cloudgreet_billing.domain.mirror import parse_invoice

        invoices = []
        for status, raw in rows:
            # The status column is the mirror's verdict (settled invoices never reopen).
            invoices.append(parse_invoice({**self._json_value(raw), "status": status}))
        return invoices

    def ledger_entries(self, window: Window, customer_id: str) -> list[LedgerEntry]:
        rows = self._execute(
            f"SELECT {_LEDGER_FIELDS} FROM billing_usage_ledger "
            f"WHERE customer_id = ? AND {_WINDOW} ORDER BY occurred_at, id",
            (customer_id, window.start, window.end),
        ).fetchall()
        return [self._ledger_entry(row) for row in rows]

    def ledger_sums_by_invoice(self, invoice_ids: Sequence[str]) -> dict[tuple[str, str], int]:
        sums: dict[tuple[str, str], int] = {}
        for batch in chunked(sorted(set(invoice_ids)), IDS_PER_QUERY):
            marks = ", ".join("?" for _ in batch)
            rows = self._execute(
                "SELECT invoice_id, currency, SUM(amount) FROM billing_usage_ledger "
                f"WHERE invoice_id IN ({marks}) GROUP BY invoice_id, currency",
                batch,
            ).fetchall()
            sums.update({(row[0], row[1]): int(row[2]) for row in rows})
        return sums

    def past_due_invoices(self, now: datetime) -> list[PastDueInvoice]:
        rows = self._execute(
            "SELECT id, customer_id, number, currency, amount_due, amount_remaining, due_date, "
            "attempt_count, first_failed_at, hosted_invoice_url FROM billing_invoices "
            f"WHERE {_PAST_DUE} ORDER BY COALESCE(due_date, stripe_created), id",
            (now,),
        ).fetchall()
        from cloudgreet_billing.adapters.store.protocol_finance import PastDueInvoice

        return [
            PastDueInvoice(
                id=row[0],
                customer_id=row[1],
                number=row[2],
                currency=row[3],
                amount_due=int(row[4]),
                amount_remaining=int(row[5]),
                due_date=self._optional_time(row[6]),
                attempt_count=int(row[7]),
                first_failed_at=self._optional_time(row[8]),
                hosted_invoice_url=row[9],
            )
            for row in rows
        ]

    def open_alerts(self) -> list[OpenAlert]:
        rows = self._execute(
            "SELECT id, type, status, customer_id, invoice_id, amount_due, currency, created_at "
            "FROM billing_alerts WHERE status = 'open' ORDER BY created_at, id"
        ).fetchall()
        from cloudgreet_billing.adapters.store.protocol_finance import OpenAlert

        return [
            OpenAlert(
                id=int(row[0]),
                type=row[1],
                status=row[2],
                customer_id=row[3],
                invoice_id=row[4],
                amount_due=None if row[5] is None else int(row[5]),
                currency=row[6],
                created_at=self._time(row[7]),
            )
            for row in rows
        ]

    # --- dashboard ------------------------------------------------------------
    def ledger_kind_totals(self, window: Window, kind: str) -> dict[str, int]:
        rows = self._execute(
            "SELECT currency, SUM(amount) FROM billing_usage_ledger "
            f"WHERE {_WINDOW} AND kind = ? GROUP BY currency ORDER BY currency",
            (window.start, window.end, kind),
        ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def open_alert_counts(self) -> dict[str, int]:
        rows = self._execute(
            "SELECT type, count(*) FROM billing_alerts WHERE status = 'open' "
            "GROUP BY type ORDER BY type"
        ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def past_due_totals(self, now: datetime) -> tuple[int, dict[str, int]]:
        rows = self._execute(
            "SELECT currency, count(*), SUM(amount_remaining) FROM billing_invoices "
            f"WHERE {_PAST_DUE} GROUP BY currency ORDER BY currency",
            (now,),
        ).fetchall()
        return sum(int(row[1]) for row in rows), {row[0]: int(row[2]) for row in rows}

    def dunning_workload(self, due_before: datetime) -> DunningWorkload:
        row = self._execute(
            "SELECT "
            "COALESCE(SUM(CASE WHEN status = 'scheduled' AND due_at < ? THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN status = 'needs_review' THEN 1 ELSE 0 END), 0) "
            "FROM billing_dunning_events WHERE status IN ('scheduled', 'needs_review')",
            (due_before,),
        ).fetchone()
        assert row is not None
        from cloudgreet_billing.adapters.store.protocol_finance import DunningWorkload

        return DunningWorkload(due=int(row[0]), needs_review=int(row[1]))

    def recurring_subscriptions(self) -> Iterator[MirroredSubscription]:
        for row in self._stream(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM billing_subscriptions "
            f"WHERE status IN ({_RECURRING}) ORDER BY id"
        ):
            yield self._subscription(row)

    # --- exports ----------------------------------------------------------------
    def stream_ledger(self, window: Window) -> Iterator[LedgerEntry]:
        for row in self._stream(
            f"SELECT {_LEDGER_FIELDS} FROM billing_usage_ledger "
            f"WHERE {_WINDOW} ORDER BY {LEDGER_EXPORT_ORDER}",
            (window.start, window.end),
        ):
            yield self._ledger_entry(row)

    def ledger_csv_chunks(self, window: Window) -> Iterator[tuple[str, int]]:
        batch: list[str] = []
        for entry in self.stream_ledger(window):
            batch.append(ledger_line(entry))
            if len(batch) >= STREAM_BATCH:
                yield "".join(batch), len(batch)
                batch.clear()
        if batch:
            yield "".join(batch), len(batch)

    def _stream_records(
        self, table: str, fields: Sequence[str], times: frozenset[str], column: str, window: Window
    ) -> Iterator[dict[str, Any]]:
        for row in self._stream(
            f"SELECT {', '.join(fields)} FROM {table} "
            f"WHERE {column} >= ? AND {column} < ? ORDER BY {column}, id",
            (window.start, window.end),
        ):
            yield {
                name: self._optional_time(value) if name in times else value
                for name, value in zip(fields, row, strict=True)
            }

    def stream_alerts(self, window: Window) -> Iterator[dict[str, Any]]:
        return self._stream_records(
            "billing_alerts", ALERT_FIELDS, ALERT_TIMES, "created_at", window
        )

    def stream_dunning(self, window: Window) -> Iterator[dict[str, Any]]:
        return self._stream_records(
            "billing_dunning_events", DUNNING_FIELDS, DUNNING_TIMES, "due_at", window
        )

    def export_row_count(self, dataset: str, window: Window) -> int | None:
        table_and_column = _EXPORT_WINDOWS.get(dataset)
        if table_and_column is None:
            return None
        table, column = table_and_column
        row = self._execute(
            f"SELECT count(*) FROM {table} WHERE {column} >= ? AND {column} < ?",
            (window.start, window.end),
        ).fetchone()
        return int(row[0]) if row else 0

    # --- the ledger export as SQL expressions (used by the dialects' fast paths) ---
    def _sql_text_cell(self, column: str) -> str:
        """``domain.export.text_cell`` before quoting: NULL when empty, formulas neutralised."""
        prefixes = ", ".join(
            self._sql_char(ord(mark)) if mark in "\t\r" else f"'{mark}'"
            for mark in FORMULA_PREFIXES
        )
        return (
            f"(CASE WHEN {column} = '' THEN NULL "
            f"WHEN substr({column}, 1, 1) IN ({prefixes}) THEN '''' || {column} "
            f"ELSE {column} END)"
        )

    def _sql_major(self, amount: str, currency: str) -> str:
        """``domain.money.to_major_string`` in SQL (integer division, zero-padded remainder)."""

        def scaled(places: int) -> str:
            unit = 10**places
            remainder = f"CAST(abs({amount}) % {unit} AS TEXT)"
            return (
                f"(CASE WHEN {amount} < 0 THEN '-' ELSE '' END) "
                f"|| CAST(abs({amount}) / {unit} AS TEXT) || '.' "
                f"|| substr('{'0' * places}' || {remainder}, length({remainder}) + 1)"
            )

        return (
            f"(CASE WHEN {currency} IN ({_codes(ZERO_DECIMAL)}) THEN CAST({amount} AS TEXT) "
            f"WHEN {currency} IN ({_codes(THREE_DECIMAL)}) THEN {scaled(3)} "
            f"ELSE {scaled(2)} END)"
        )

    def _sql_ledger_cells(self) -> list[str]:
        """One SQL expression per ``LEDGER_COLUMNS`` cell, unquoted, for engines whose CSV
        writer quotes (PostgreSQL's COPY). SQLite builds whole lines instead
        (``SqliteStore._sql_ledger_line``).

        ``kind`` and ``currency`` are held by CHECK constraints to a closed list and three
        lowercase letters, so they never need neutralising or quoting."""
        return [
            "CAST(id AS TEXT)",
            self._sql_time_cell("occurred_at"),
            self._sql_text_cell("customer_id"),
            "kind",
            "CAST(amount AS TEXT)",
            self._sql_major("amount", "currency"),
            "currency",
            self._sql_text_cell("invoice_id"),
            self._sql_text_cell("description"),
            self._sql_text_cell("external_id"),
            self._sql_time_cell("created_at"),
        ]

    def _sql_ledger_export(self, cells: Sequence[str]) -> str:
        # Qualified: in PostgreSQL a bare ORDER BY name means an output column first, and a
        # cell is named after the column it formats (``CAST(id AS TEXT)`` is "id"), which
        # would order ids and amounts as text.
        order = ", ".join(
            f"billing_usage_ledger.{column.strip()}" for column in LEDGER_EXPORT_ORDER.split(",")
        )
        return (
            f"SELECT {', '.join(cells)} FROM billing_usage_ledger WHERE {_WINDOW} ORDER BY {order}"
        )
