"""Alerts, their notes, and the transitions between their states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.adapters.store.sql_audit import AuditSql
from cloudgreet_billing.adapters.store.sql_base import Cursor

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_alerts import (
        AlertQuery,
        LedgerTotal,
        RaisedAlert,
    )
    from cloudgreet_billing.domain.alerts import Alert, AlertDraft, AlertNote

ALERT_SELECT = (
    "SELECT id, type, status, dedupe_key, customer_id, invoice_id, amount_due, currency, "
    "stripe_event_id, attempt_count, last_failure, details, created_at, updated_at, "
    "acknowledged_at, resolved_at, resolution FROM billing_alerts"
)
# A newer failure (higher or equal attempt count) replaces what the alert says; an older one
# delivered late only raises the count if it is higher. ``details`` keeps its first value,
# so ``opened_by`` tells an insert from an update in RETURNING on both engines.
_NEWER = "excluded.attempt_count >= billing_alerts.attempt_count"
RAISE_ALERT = (
    "INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id, amount_due, "
    "currency, stripe_event_id, attempt_count, last_failure, details, created_at, updated_at) "
    "VALUES (?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO UPDATE SET "
    f"amount_due = CASE WHEN {_NEWER} THEN excluded.amount_due ELSE billing_alerts.amount_due END, "
    f"stripe_event_id = CASE WHEN {_NEWER} THEN excluded.stripe_event_id "
    "ELSE billing_alerts.stripe_event_id END, "
    f"last_failure = CASE WHEN {_NEWER} THEN excluded.last_failure "
    "ELSE billing_alerts.last_failure END, "
    "attempt_count = CASE WHEN excluded.attempt_count > billing_alerts.attempt_count "
    "THEN excluded.attempt_count ELSE billing_alerts.attempt_count END, "
    "updated_at = excluded.updated_at "
    "RETURNING id, details"
)


class AlertsSql(AuditSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    if TYPE_CHECKING:
        # Provided by ``SqlStore`` (core area) and ``DunningSql``.
        def _insert_audit(self, entry: AuditDraft, now: datetime) -> int: ...

        def _cancel_pending_steps_in_tx(
            self, invoice_id: str, reason: str, now: datetime
        ) -> int: ...

    # --- rows ----------------------------------------------------------------------
    def _alert(self, row: Sequence[Any]) -> Alert:
        from cloudgreet_billing.domain.alerts import Alert

        return Alert(
            id=int(row[0]),
            type=row[1],
            status=row[2],
            dedupe_key=row[3],
            customer_id=row[4],
            invoice_id=row[5],
            amount_due=None if row[6] is None else int(row[6]),
            currency=row[7],
            stripe_event_id=row[8],
            attempt_count=int(row[9]),
            last_failure=row[10],
            details=self._json_value(row[11]) or {},
            created_at=self._time(row[12]),
            updated_at=self._time(row[13]),
            acknowledged_at=self._optional_time(row[14]),
            resolved_at=self._optional_time(row[15]),
            resolution=row[16],
        )

    def get_alert(self, alert_id: int) -> Alert | None:
        row = self._execute(f"{ALERT_SELECT} WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else self._alert(row)

    def list_alerts(self, query: AlertQuery) -> list[Alert]:
        where: list[str] = []
        params: list[Any] = []
        for column, values in (("type", query.types), ("status", query.statuses)):
            if values is not None:
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        for clause, value in (
            ("customer_id = ?", query.customer_id),
            ("invoice_id = ?", query.invoice_id),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = ALERT_SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at DESC, id DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [self._alert(row) for row in self._execute(sql, params).fetchall()]

    def alerts_touched(self, since: datetime, until: datetime) -> list[Alert]:
        sql = (
            f"{ALERT_SELECT} WHERE (created_at >= ? AND created_at < ?)"
            " OR (resolved_at >= ? AND resolved_at < ?)"
            " OR status IN ('open', 'acknowledged')"
            " ORDER BY created_at, id"
        )
        rows = self._execute(sql, (since, until, since, until)).fetchall()
        return [self._alert(row) for row in rows]

    def _note(self, row: Sequence[Any]) -> AlertNote:
        from cloudgreet_billing.domain.alerts import AlertNote

        return AlertNote(author=row[0], body=row[1], created_at=self._time(row[2]))

    def alert_notes(self, alert_id: int) -> list[AlertNote]:
        return self.alert_notes_for([alert_id]).get(alert_id, [])

    def alert_notes_for(self, alert_ids: Sequence[int]) -> dict[int, list[AlertNote]]:
        if not alert_ids:
            return {}
        rows = self._execute(
            "SELECT alert_id, author, body, created_at FROM billing_alert_notes "
            f"WHERE alert_id IN ({', '.join('?' for _ in alert_ids)}) ORDER BY created_at, id",
            list(alert_ids),
        ).fetchall()
        notes: dict[int, list[AlertNote]] = {}
        for row in rows:
            notes.setdefault(int(row[0]), []).append(self._note(row[1:]))
        return notes

    # --- raising and settling (the ``_in_tx`` forms run inside a caller's transaction) ---
    def _raise_alert_in_tx(self, draft: AlertDraft, now: datetime) -> tuple[int, bool]:
        """Open or update; returns (alert id, opened). ``draft.details['opened_by']`` must
        be unique to this call, so that an update can be told from an insert."""
        row = self._execute(
            RAISE_ALERT,
            (
                draft.type,
                draft.dedupe_key,
                draft.customer_id,
                draft.invoice_id,
                draft.amount_due,
                draft.currency,
                draft.stripe_event_id,
                draft.attempt_count,
                draft.last_failure,
                self._json_param(dict(draft.details)),
                now,
                now,
            ),
        ).fetchone()
        assert row is not None
        details = self._json_value(row[1]) or {}
        return int(row[0]), details.get("opened_by") == draft.details.get("opened_by")

    def _resolve_invoice_alerts_in_tx(
        self, invoice_id: str, resolution: str, now: datetime
    ) -> list[int]:
        """Resolve every unresolved alert of the invoice; returns their ids, in order."""
        cursor = self._send_resolve_invoice_alerts(invoice_id, resolution, now)
        return sorted(int(row[0]) for row in cursor.fetchall())

    def _send_resolve_invoice_alerts(
        self, invoice_id: str, resolution: str, now: datetime
    ) -> Cursor:
        """``_resolve_invoice_alerts_in_tx`` without reading the answer (one row per alert
        resolved): batched event processing reads it at the end of its batch."""
        return self._execute(
            "UPDATE billing_alerts SET status = 'resolved', resolved_at = ?, resolution = ?, "
            "updated_at = ? WHERE invoice_id = ? AND status <> 'resolved' RETURNING id",
            (now, resolution, now, invoice_id),
        )

    def raise_alert(self, draft: AlertDraft, *, actor: str, now: datetime) -> RaisedAlert:
        from cloudgreet_billing.adapters.store.protocol_alerts import RaisedAlert

        with self._transaction():
            alert_id, opened = self._raise_alert_in_tx(draft, now)
            if opened:
                self._insert_audit(
                    AuditDraft(
                        actor,
                        "alert.open",
                        f"alert:{alert_id}",
                        "opened",
                        details={"dedupe_key": draft.dedupe_key},
                    ),
                    now,
                )
        alert = self.get_alert(alert_id)
        assert alert is not None
        return RaisedAlert(alert=alert, opened=opened)

    def acknowledge_alert(self, alert_id: int, *, actor: str, now: datetime) -> Alert | None:
        with self._transaction():
            row = self._execute(
                "UPDATE billing_alerts SET status = 'acknowledged', acknowledged_at = ?, "
                "updated_at = ? WHERE id = ? AND status = 'open' RETURNING id",
                (now, now, alert_id),
            ).fetchone()
            if row is not None:
                self._insert_audit(
                    AuditDraft(actor, "alert.ack", f"alert:{alert_id}", "acknowledged"), now
                )
        return self.get_alert(alert_id)

    def resolve_alert(
        self, alert_id: int, *, resolution: str, actor: str, now: datetime
    ) -> Alert | None:
        with self._transaction():
            row = self._execute(
                "UPDATE billing_alerts SET status = 'resolved', resolved_at = ?, "
                "resolution = ?, updated_at = ? WHERE id = ? AND status <> 'resolved' "
                "RETURNING id",
                (now, resolution, now, alert_id),
            ).fetchone()
            if row is not None:
                self._audit_resolved(alert_id, resolution, actor, now)
        return self.get_alert(alert_id)

    def add_alert_note(
        self, alert_id: int, *, author: str, body: str, now: datetime
    ) -> AlertNote | None:
        from cloudgreet_billing.domain.alerts import AlertNote

        with self._transaction():
            touched = self._execute(
                "UPDATE billing_alerts SET updated_at = ? WHERE id = ? RETURNING id",
                (now, alert_id),
            ).fetchone()
            if touched is None:
                return None
            self._execute(
                "INSERT INTO billing_alert_notes (alert_id, author, body, created_at) "
                "VALUES (?, ?, ?, ?)",
                (alert_id, author, body, now),
            )
            self._insert_audit(AuditDraft(author, "alert.note", f"alert:{alert_id}", "noted"), now)
        return AlertNote(author=author, body=body, created_at=now)

    def resolve_invoice_alerts(
        self, invoice_id: str, *, resolution: str, actor: str, now: datetime
    ) -> tuple[list[int], int]:
        with self._transaction():
            resolved = self._resolve_invoice_alerts_in_tx(invoice_id, resolution, now)
            canceled = self._cancel_pending_steps_in_tx(invoice_id, resolution, now)
            for alert_id in resolved:
                self._audit_resolved(alert_id, resolution, actor, now)
        return resolved, canceled

    def _audit_resolved(self, alert_id: int, resolution: str, actor: str, now: datetime) -> None:
        self._insert_audit(
            AuditDraft(
                actor,
                "alert.resolve",
                f"alert:{alert_id}",
                "resolved",
                details={"resolution": resolution},
            ),
            now,
        )

    # --- ledger thresholds -----------------------------------------------------------
    def ledger_totals(self, *, kind: str, since: datetime, until: datetime) -> list[LedgerTotal]:
        from cloudgreet_billing.adapters.store.protocol_alerts import LedgerTotal

        rows = self._execute(
            "SELECT customer_id, currency, sum(amount), count(*) FROM billing_usage_ledger "
            "WHERE kind = ? AND occurred_at >= ? AND occurred_at < ? "
            "GROUP BY customer_id, currency ORDER BY customer_id, currency",
            (kind, since, until),
        ).fetchall()
        return [LedgerTotal(row[0], row[1], int(row[2]), int(row[3])) for row in rows]

    def ledger_created_window(self, created_at: datetime) -> tuple[datetime, datetime] | None:
        row = self._execute(
            "SELECT min(occurred_at), max(occurred_at) FROM billing_usage_ledger "
            "WHERE created_at = ?",
            (created_at,),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return self._time(row[0]), self._time(row[1])
