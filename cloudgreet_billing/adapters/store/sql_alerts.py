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

# Alerts from Stripe events (domain.merge): what an alert says comes from the event with the
# largest (attempt_count, created, event id), in any order of delivery; the count never
# falls. The parameters of each CASE are that event's key, then the value.
_LATER_EVENT = (
    "(stripe_event_created IS NULL OR "
    "(?, ?, ?) > (attempt_count, stripe_event_created, stripe_event_id))"
)
_EVENT_CONTENT = (
    "amount_due",
    "stripe_event_id",
    "stripe_event_created",
    "last_failure",
    "details",
)
MERGE_EVENT_ALERT = (
    "UPDATE billing_alerts SET "
    + ", ".join(
        f"{column} = CASE WHEN {_LATER_EVENT} THEN ? ELSE {column} END" for column in _EVENT_CONTENT
    )
    + ", attempt_count = CASE WHEN ? > attempt_count THEN ? ELSE attempt_count END, "
    "updated_at = ? WHERE "
)
#: The unresolved alert of the key (at most one).
MERGE_UNRESOLVED = MERGE_EVENT_ALERT + "dedupe_key = ? AND status <> 'resolved' RETURNING id"
#: The latest alert of the key, whatever its status: the one a settlement resolved.
MERGE_LATEST = (
    MERGE_EVENT_ALERT
    + "id = (SELECT max(id) FROM billing_alerts WHERE dedupe_key = ?) RETURNING id"
)
INSERT_EVENT_ALERT = (
    "INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id, "
    "amount_due, currency, stripe_event_id, stripe_event_created, attempt_count, "
    "last_failure, details, created_at, updated_at, resolved_at, resolution) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING RETURNING id"
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

    @staticmethod
    def _alert_filter(query: AlertQuery) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, values in (("type", query.types), ("status", query.statuses)):
            if values is not None:
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        for clause, value in (
            ("customer_id = ?", query.customer_id),
            ("invoice_id = ?", query.invoice_id),
            ("created_at >= ?", query.since),
            ("created_at < ?", query.until),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        return (f" WHERE {' AND '.join(where)}" if where else ""), params

    def list_alerts(self, query: AlertQuery) -> list[Alert]:
        condition, params = self._alert_filter(query)
        sql = ALERT_SELECT + condition + " ORDER BY created_at DESC, id DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [self._alert(row) for row in self._execute(sql, params).fetchall()]

    def count_alerts(self, query: AlertQuery) -> int:
        condition, params = self._alert_filter(query)
        row = self._execute(f"SELECT count(*) FROM billing_alerts{condition}", params).fetchone()
        return int(row[0]) if row else 0

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

    def _raise_event_alert_in_tx(
        self, draft: AlertDraft, created: datetime, now: datetime, resolution: str | None
    ) -> tuple[int, bool]:
        """Open or add to the alert a Stripe event (created at ``created``) raises; returns
        (alert id, opened). With ``resolution`` (the invoice is settled), add to the latest
        alert of the key, or open one already resolved with it."""
        details = self._json_param(dict(draft.details))
        key = (draft.attempt_count, created, draft.stripe_event_id)
        content = (draft.amount_due, draft.stripe_event_id, created, draft.last_failure, details)
        merge = [
            *(part for value in content for part in (*key, value)),
            draft.attempt_count,
            draft.attempt_count,
            now,
            draft.dedupe_key,
        ]
        inserted = (
            draft.type,
            "open" if resolution is None else "resolved",
            draft.dedupe_key,
            draft.customer_id,
            draft.invoice_id,
            draft.amount_due,
            draft.currency,
            draft.stripe_event_id,
            created,
            draft.attempt_count,
            draft.last_failure,
            details,
            now,
            now,
            None if resolution is None else now,
            resolution,
        )
        if resolution is not None:
            row = self._execute(MERGE_LATEST, merge).fetchone()
            if row is not None:
                return int(row[0]), False
            row = self._execute(INSERT_EVENT_ALERT, inserted).fetchone()
            assert row is not None  # a resolved alert conflicts with none
            return int(row[0]), True
        # Most failures are an invoice's first: try to open the alert, then add to it.
        # Twice at most: another worker may resolve it between the two statements.
        for _ in range(2):
            row = self._execute(INSERT_EVENT_ALERT, inserted).fetchone()
            if row is not None:
                return int(row[0]), True
            row = self._execute(MERGE_UNRESOLVED, merge).fetchone()
            if row is not None:
                return int(row[0]), False
        raise RuntimeError(f"alert {draft.dedupe_key} could be neither opened nor updated")

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
