"""The usage ledger (``billing_usage_ledger``): record and list; imports are per dialect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloudgreet_billing.adapters.store.protocol_ledger import LedgerQuery
from cloudgreet_billing.adapters.store.sql_base import SqlBase
from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry

LEDGER_COLUMNS = (
    "customer_id, kind, amount, currency, occurred_at, invoice_id, description, external_id, "
    "created_at"
)
LEDGER_SELECT = f"SELECT id, {LEDGER_COLUMNS} FROM billing_usage_ledger"
LEDGER_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_LEDGER = (
    f"INSERT INTO billing_usage_ledger ({LEDGER_COLUMNS}) VALUES {LEDGER_VALUES} "
    "ON CONFLICT (external_id) DO NOTHING"
)


class LedgerSql(SqlBase):
    """SQL for the ledger, shared by SQLite and PostgreSQL; each has its own bulk import
    (``import_ledger``)."""

    @staticmethod
    def _ledger_params(draft: LedgerDraft, now: datetime) -> tuple[Any, ...]:
        return (
            draft.customer_id,
            draft.kind,
            draft.amount,
            draft.currency,
            draft.occurred_at,
            draft.invoice_id,
            draft.description,
            draft.external_id,
            now,
        )

    def _ledger_entry(self, row: Sequence[Any]) -> LedgerEntry:
        return LedgerEntry(
            id=int(row[0]),
            customer_id=row[1],
            kind=row[2],
            amount=int(row[3]),
            currency=row[4],
            occurred_at=self._time(row[5]),
            invoice_id=row[6],
            description=row[7],
            external_id=row[8],
            created_at=self._time(row[9]),
        )

    def record_ledger_entry(self, draft: LedgerDraft, now: datetime) -> tuple[LedgerEntry, bool]:
        with self._transaction():
            row = self._execute(
                f"{INSERT_LEDGER} RETURNING id, {LEDGER_COLUMNS}", self._ledger_params(draft, now)
            ).fetchone()
            if row is not None:
                return self._ledger_entry(row), True
            existing = self._execute(
                f"{LEDGER_SELECT} WHERE external_id = ?", (draft.external_id,)
            ).fetchone()
        assert existing is not None, "ON CONFLICT skipped a row with no external_id"
        return self._ledger_entry(existing), False

    @staticmethod
    def _ledger_filter(query: LedgerQuery) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("customer_id = ?", query.customer_id),
            ("kind = ?", query.kind),
            ("occurred_at >= ?", query.since),
            ("occurred_at < ?", query.until),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        return (f" WHERE {' AND '.join(where)}" if where else ""), params

    def list_ledger(self, query: LedgerQuery) -> list[LedgerEntry]:
        condition, params = self._ledger_filter(query)
        params.append(query.limit)
        rows = self._execute(
            f"{LEDGER_SELECT}{condition} ORDER BY occurred_at DESC, id DESC LIMIT ?", params
        ).fetchall()
        return [self._ledger_entry(row) for row in rows]

    def count_ledger(self, query: LedgerQuery) -> int:
        condition, params = self._ledger_filter(query)
        row = self._execute(
            f"SELECT count(*) FROM billing_usage_ledger{condition}", params
        ).fetchone()
        return int(row[0]) if row else 0
