"""Operator actions: what a retry, a resent link or a portal link change in the store.

Alerts change through the alerts area's operations (so their ``alert:<id>`` audit lines
are written too); each operation here adds the action's own outcome line in the same
transaction.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft, AuditRecord
from cloudgreet_billing.adapters.store.sql_audit import AuditSql
from cloudgreet_billing.adapters.store.sql_mirror import RECORD_FAILURE, UPSERT_INVOICE
from cloudgreet_billing.domain.merge import NO_EVENT

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_actions import Settlement
    from cloudgreet_billing.adapters.store.protocol_alerts import RaisedAlert
    from cloudgreet_billing.domain.alerts import AlertDraft, AlertNote
    from cloudgreet_billing.domain.events import InvoiceFailure
    from cloudgreet_billing.domain.mirror import MirroredInvoice


class ActionsSql(AuditSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    if TYPE_CHECKING:
        # Provided by ``SqlStore`` (core area), ``MirrorSql`` and ``AlertsSql``.
        def _insert_audit(self, entry: AuditDraft, now: datetime) -> int: ...

        def _invoice_params(
            self,
            invoice: MirroredInvoice,
            observed_at: datetime,
            now: datetime,
            event_id: str = ...,
            settled: tuple[str, str] | None = None,
        ) -> tuple[Any, ...]: ...

        def resolve_invoice_alerts(
            self, invoice_id: str, *, resolution: str, actor: str, now: datetime
        ) -> tuple[list[int], int]: ...

        def raise_alert(self, draft: AlertDraft, *, actor: str, now: datetime) -> RaisedAlert: ...

        def add_alert_note(
            self, alert_id: int, *, author: str, body: str, now: datetime
        ) -> AlertNote | None: ...

    def settle_paid_invoice(
        self, invoice: MirroredInvoice, *, resolution: str, audit: AuditDraft, now: datetime
    ) -> Settlement:
        from cloudgreet_billing.adapters.store.protocol_actions import Settlement

        with self._transaction():
            # Observed now: newer than any event about the invoice processed so far.
            self._execute(UPSERT_INVOICE, self._invoice_params(invoice, now, now)).fetchone()
            resolved, canceled = self.resolve_invoice_alerts(
                invoice.id, resolution=resolution, actor=audit.actor, now=now
            )
            told = {**audit.details, "resolved_alerts": resolved, "canceled_steps": canceled}
            self._insert_audit(replace(audit, details=told), now)
        return Settlement(resolved_alert_ids=tuple(resolved), canceled_steps=canceled)

    def record_failed_attempt(
        self,
        alert_id: int | None,
        *,
        attempt_count: int,
        failure: str,
        note: str,
        audit: AuditDraft,
        now: datetime,
        declined: tuple[str, InvoiceFailure] | None = None,
    ) -> None:
        with self._transaction():
            if declined is not None:
                self._record_declined(declined[0], declined[1], attempt_count, now)
            if alert_id is not None:
                self._execute(
                    "UPDATE billing_alerts SET attempt_count = "
                    "CASE WHEN attempt_count + 1 > ? THEN attempt_count + 1 ELSE ? END, "
                    "last_failure = ?, updated_at = ? WHERE id = ?",
                    (attempt_count, attempt_count, failure, now, alert_id),
                )
                self.add_alert_note(alert_id, author=audit.actor, body=note, now=now)
            self._insert_audit(audit, now)

    def _record_declined(
        self, invoice_id: str, failure: InvoiceFailure, attempt_count: int, now: datetime
    ) -> None:
        """A manual charge's decline as a failure of the invoice observed ``now`` with no
        event (``RECORD_FAILURE``'s key: attempt, time, carries a decline, event id)."""
        decline = failure.decline
        key = (attempt_count, now, int(decline.known), NO_EVENT)
        values = (
            failure.code,
            failure.message,
            decline.decline_code,
            decline.advice_code,
            decline.payment_method,
            attempt_count,
            now,
            NO_EVENT,
        )
        self._execute(
            RECORD_FAILURE,
            (now, now, *(part for value in values for part in (*key, value)), invoice_id),
        ).fetchall()

    def open_action_required_alert(
        self, invoice: MirroredInvoice, *, failure: str, note: str, audit: AuditDraft, now: datetime
    ) -> int:
        from cloudgreet_billing.adapters.store.protocol_actions import action_required_draft

        draft = action_required_draft(invoice, failure=failure, audit=audit, now=now)
        with self._transaction():
            raised = self.raise_alert(draft, actor=audit.actor, now=now)
            self.add_alert_note(raised.alert.id, author=audit.actor, body=note, now=now)
            self._insert_audit(
                replace(audit, details={**audit.details, "action_alert_id": raised.alert.id}),
                now,
            )
        return raised.alert.id

    def note_alert(
        self, alert_id: int | None, *, author: str, body: str, audit: AuditDraft, now: datetime
    ) -> None:
        with self._transaction():
            if alert_id is not None:
                self.add_alert_note(alert_id, author=author, body=body, now=now)
            self._insert_audit(audit, now)

    def action_audit(self, target: str, action: str) -> list[AuditRecord]:
        return self._audit_records(
            "WHERE target = ? AND action = ? ORDER BY occurred_at, id", (target, action)
        )
