"""The usage ledger (``billing_usage_ledger``): record and list; imports are per dialect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloudgreet_billing.adapters.store.protocol_ledger import LedgerQuery
from cloudgreet_billing.adapters.store.sql_base import SqlBase
from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry
from cloudgreet_billing.domain.ledger_identity import (
    IDENTITY_COLUMNS,
    MAX_LISTED_CONFLICTS,
    EntryFacts,
    ExternalIdConflict,
    ExternalIdConflicts,
    first_conflict,
)

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
#: An import's rows against the entries that hold their external ids: ``given`` (a staged
#: row or a later ledger row) and ``recorded``, each with its identity columns.
CONFLICT_COLUMNS = (
    ", ".join(f"recorded.{column}" for column in IDENTITY_COLUMNS)
    + ", "
    + ", ".join(f"given.{column}" for column in IDENTITY_COLUMNS)
    + ", given.external_id"
)


def same_facts(null_safe_equal: str) -> str:
    """SQL true when ``given`` repeats ``recorded``: every identity column the same, NULLs
    too. ``null_safe_equal`` is the dialect's operator (SQLite's ``IS``, which older
    SQLite versions know, for PostgreSQL's ``IS NOT DISTINCT FROM``)."""
    return " AND ".join(
        f"given.{column} {null_safe_equal} recorded.{column}" for column in IDENTITY_COLUMNS
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
        assert draft.external_id is not None
        entry = self._ledger_entry(existing)
        conflict = first_conflict(entry, entry.id, draft, draft.external_id)
        if conflict is not None:
            raise ExternalIdConflicts([conflict], 1)
        return entry, False

    def _entry_facts(self, values: Sequence[Any]) -> EntryFacts:
        customer_id, kind, amount, currency, occurred_at, invoice_id = values
        return EntryFacts(
            customer_id, kind, int(amount), currency, self._time(occurred_at), invoice_id
        )

    def _conflict(
        self,
        row: Sequence[Any],
        *,
        given_row: int,
        recorded_row: int | None,
        entry_id: int,
        lead: int = 2,
    ) -> ExternalIdConflict:
        """A row of a query selecting ``CONFLICT_COLUMNS`` after ``lead`` other columns."""
        width = len(IDENTITY_COLUMNS)
        return ExternalIdConflict(
            external_id=row[lead + 2 * width],
            recorded=self._entry_facts(row[lead : lead + width]),
            given=self._entry_facts(row[lead + width : lead + 2 * width]),
            given_row=given_row,
            recorded_entry_id=None if recorded_row is not None else entry_id,
            recorded_row=recorded_row,
        )

    def _conflict_count(self, query: str, params: Sequence[Any], listed: int) -> int:
        """How many conflicts ``query`` finds, counted only past the listed ones."""
        if listed < MAX_LISTED_CONFLICTS:
            return listed
        row = self._execute(f"SELECT count(*) FROM ({query}) AS conflicts", params).fetchone()
        return int(row[0]) if row else listed

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
