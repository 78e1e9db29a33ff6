"""What SQLite and PostgreSQL share: one implementation of the store's operations.

``SqlStore`` gathers the area mixins; this module holds the core areas (schema, usage
ledger, audit log, shared settings). Dialect subclasses add their own fast paths (bulk
import with COPY, claiming with ``SKIP LOCKED``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from cloudgreet_billing.adapters.store.protocol import (
    TABLES,
    AuditDraft,
    AuditRecord,
    ImportOutcome,
    LedgerQuery,
)
from cloudgreet_billing.adapters.store.sql_actions import ActionsSql
from cloudgreet_billing.adapters.store.sql_alerts import AlertsSql
from cloudgreet_billing.adapters.store.sql_base import chunked
from cloudgreet_billing.adapters.store.sql_dunning import DunningSql
from cloudgreet_billing.adapters.store.sql_finance import FinanceSql
from cloudgreet_billing.adapters.store.sql_mirror import MirrorSql
from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry

LEDGER_COLUMNS = (
    "customer_id, kind, amount, currency, occurred_at, invoice_id, description, external_id, "
    "created_at"
)
LEDGER_SELECT = f"SELECT id, {LEDGER_COLUMNS} FROM billing_usage_ledger"
INSERT_LEDGER = (
    f"INSERT INTO billing_usage_ledger ({LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (external_id) DO NOTHING"
)
IMPORT_BATCH = 5_000


class SqlStore(MirrorSql, AlertsSql, DunningSql, FinanceSql, ActionsSql):
    """Every store operation over a DB-API connection; see ``SqliteStore``, ``PostgresStore``."""

    # --- schema -------------------------------------------------------------
    def schema_version(self) -> int | None:
        if not self._table_exists("billing_schema_version"):
            return None
        row = self._execute("SELECT max(version) FROM billing_schema_version").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _table_exists(self, table: str) -> bool:
        raise NotImplementedError

    def row_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table in TABLES:
            # Table names come from the TABLES constant, never from input.
            row = self._execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts

    # --- usage ledger -------------------------------------------------------
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

    def import_ledger(
        self, drafts: Iterable[LedgerDraft], now: datetime, *, expected_rows: int | None = None
    ) -> ImportOutcome:
        seen = 0
        inserted = 0
        with self._transaction():
            rows = (self._ledger_params(draft, now) for draft in drafts)
            for batch in chunked(rows, IMPORT_BATCH):
                seen += len(batch)
                inserted += self._executemany(INSERT_LEDGER, batch)
        return ImportOutcome(inserted=inserted, duplicates=seen - inserted)

    def list_ledger(self, query: LedgerQuery) -> list[LedgerEntry]:
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
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        params.append(query.limit)
        rows = self._execute(
            f"{LEDGER_SELECT}{condition} ORDER BY occurred_at DESC, id DESC LIMIT ?", params
        ).fetchall()
        return [self._ledger_entry(row) for row in rows]

    # --- audit log ----------------------------------------------------------
    def append_audit(self, entry: AuditDraft, now: datetime) -> int:
        with self._transaction():
            return self._insert_audit(entry, now)

    def _insert_audit(self, entry: AuditDraft, now: datetime) -> int:
        """Append inside a transaction the caller already holds."""
        row = self._execute(
            "INSERT INTO billing_audit_log "
            "(occurred_at, actor, action, target, outcome, idempotency_key, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                now,
                entry.actor,
                entry.action,
                entry.target,
                entry.outcome,
                entry.idempotency_key,
                self._json_param(dict(entry.details)),
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def audit_trail(self, target: str, limit: int = 100) -> list[AuditRecord]:
        rows = self._execute(
            "SELECT id, occurred_at, actor, action, target, outcome, idempotency_key, details "
            "FROM billing_audit_log WHERE target = ? ORDER BY occurred_at, id LIMIT ?",
            (target, limit),
        ).fetchall()
        return [
            AuditRecord(
                id=int(row[0]),
                occurred_at=self._time(row[1]),
                actor=row[2],
                action=row[3],
                target=row[4],
                outcome=row[5],
                idempotency_key=row[6],
                details=self._json_value(row[7]),
            )
            for row in rows
        ]

    # --- shared settings ----------------------------------------------------
    def get_setting(self, key: str) -> Any | None:
        row = self._execute("SELECT value FROM billing_settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._json_value(row[0])

    def put_setting(self, key: str, value: Any, actor: str, now: datetime) -> None:
        with self._transaction():
            self._execute(
                "INSERT INTO billing_settings (key, value, updated_at, updated_by) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (key, self._json_param(value), now, actor),
            )
