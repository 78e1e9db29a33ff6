"""The audit log, which every area writes: append-only, read per target."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft, AuditRecord
from cloudgreet_billing.adapters.store.sql_base import SqlBase

AUDIT_SELECT = (
    "SELECT id, occurred_at, actor, action, target, outcome, idempotency_key, details "
    "FROM billing_audit_log"
)


class AuditSql(SqlBase):
    """SQL for the audit log, shared by SQLite and PostgreSQL."""

    def append_audit(self, entry: AuditDraft, now: datetime) -> int:
        with self._transaction():
            return self._insert_audit(entry, now)

    def _insert_audit(self, entry: AuditDraft, now: datetime) -> int:
        """Append inside a transaction the caller already holds, beside the change it records."""
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
        return self._audit_records(
            "WHERE target = ? ORDER BY occurred_at, id LIMIT ?", (target, limit)
        )

    def audit_between(
        self, since: datetime, until: datetime, limit: int | None = None
    ) -> list[AuditRecord]:
        condition = "WHERE occurred_at >= ? AND occurred_at < ? ORDER BY occurred_at, id"
        params: list[Any] = [since, until]
        if limit is not None:
            condition += " LIMIT ?"
            params.append(limit)
        return self._audit_records(condition, params)

    def _audit_records(self, condition: str, params: Sequence[Any]) -> list[AuditRecord]:
        rows = self._execute(f"{AUDIT_SELECT} {condition}", params).fetchall()
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
