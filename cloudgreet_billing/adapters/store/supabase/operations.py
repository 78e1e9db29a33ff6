"""The quarantine, drift and actions areas of the Supabase store (QuarantineOps, DriftOps,
ActionsOps), over the functions of 0007_supabase_api.sql's section "quarantine, drift,
actions".

Every operation that writes is one function call, so one transaction, as the SQL store's
``with self._transaction()`` is (``sql_quarantine.py``, ``sql_drift.py``,
``sql_actions.py``); reads of any size are paged by key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase, iso, utc, utc_time
from cloudgreet_billing.adapters.store.supabase.client import PAGE_SIZE
from cloudgreet_billing.adapters.store.supabase.event_plans import (
    alert_draft_json,
    invoice_json,
    invoice_of,
    plan_json,
    subscription_json,
    subscription_of,
)

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_actions import Settlement
    from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft, AuditRecord
    from cloudgreet_billing.domain.dunning import DunningPlanner
    from cloudgreet_billing.domain.events import EventPlan, EventResult, InvoiceFailure
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription
    from cloudgreet_billing.domain.quarantine import QuarantinedEvent, RejectedEvent


def _statuses(statuses: Sequence[str] | None) -> list[str] | None:
    return None if statuses is None else list(statuses)


def audit_json(entry: AuditDraft) -> dict[str, Any]:
    """An audit line as the functions take it (``p_audit``)."""
    return {
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "idempotency_key": entry.idempotency_key,
        "details": dict(entry.details),
    }


def declined_json(invoice_id: str, failure: InvoiceFailure) -> dict[str, Any]:
    """A manual charge's decline (``record_failed_attempt``'s ``declined``) as the function
    takes it."""
    decline = failure.decline
    return {
        "invoice_id": invoice_id,
        "code": failure.code,
        "message": failure.message,
        "decline_code": decline.decline_code,
        "advice_code": decline.advice_code,
        "payment_method": decline.payment_method,
        "known": decline.known,
    }


def quarantined_of(row: Mapping[str, Any]) -> QuarantinedEvent:
    from cloudgreet_billing.domain.quarantine import QuarantinedEvent

    return QuarantinedEvent(
        id=int(row["id"]),
        event_id=row["event_id"],
        type=row["type"],
        stripe_created=utc_time(row["stripe_created"]),
        livemode=bool(row["livemode"]),
        source=row["source"],
        reason=row["reason"],
        payload=row["payload"],
        status=row["status"],
        times_seen=int(row["times_seen"]),
        first_seen_at=utc(row["first_seen_at"]),
        last_seen_at=utc(row["last_seen_at"]),
        resolved_at=utc_time(row["resolved_at"]),
        resolved_by=row["resolved_by"],
        resolution=row["resolution"],
    )


def audit_record_of(row: Mapping[str, Any]) -> AuditRecord:
    from cloudgreet_billing.adapters.store.protocol_audit import AuditRecord

    return AuditRecord(
        id=int(row["id"]),
        occurred_at=utc(row["occurred_at"]),
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        outcome=row["outcome"],
        idempotency_key=row["idempotency_key"],
        details=row["details"] or {},
    )


class SupabaseOperations(SupabaseBase):
    """QuarantineOps, DriftOps and ActionsOps through ``billing_api_*`` functions."""

    def _read_pages(
        self,
        fn: str,
        args: Mapping[str, Any],
        key: str,
        *,
        after: Any = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Rows of ``fn`` after ``after``, at most ``limit`` (None: all), page by ``key``.
        Stops at an empty page or at the limit, never at a short page: PostgREST may cap
        a page below what was asked (``client.pages``)."""
        left = limit
        while left is None or left > 0:
            size = PAGE_SIZE if left is None else min(PAGE_SIZE, left)
            page = self._api.rpc(fn, {**args, "p_after": after, "p_limit": size}) or []
            if not page:
                return
            yield from page
            if left is not None:
                left -= len(page)
            after = page[-1][key]

    # --- quarantine -----------------------------------------------------------------
    def list_quarantined(
        self,
        *,
        statuses: Sequence[str] | None = ("quarantined",),
        limit: int | None = 50,
        after: int | None = None,
        event_id: str | None = None,
    ) -> list[QuarantinedEvent]:
        args = {"p_statuses": _statuses(statuses), "p_event_id": event_id}
        rows = self._read_pages(
            "billing_api_list_quarantined", args, "id", after=after, limit=limit
        )
        return [quarantined_of(row) for row in rows]

    def get_quarantined(self, quarantine_id: int) -> QuarantinedEvent | None:
        row = self._api.rpc("billing_api_get_quarantined", {"p_id": quarantine_id})
        return None if row is None else quarantined_of(row)

    def count_quarantined(self, statuses: Sequence[str] | None = ("quarantined",)) -> int:
        found = self._api.rpc("billing_api_count_quarantined", {"p_statuses": _statuses(statuses)})
        return int(found or 0)

    def retry_quarantined(
        self,
        quarantine_id: int,
        attempt: EventPlan | RejectedEvent,
        *,
        planner: DunningPlanner,
        now: datetime,
        actor: str,
    ) -> EventResult:
        from cloudgreet_billing.domain.events import EventPlan, EventResult
        from cloudgreet_billing.errors import NotFound

        plan: dict[str, Any] | None = None
        reason: str | None = None
        if isinstance(attempt, EventPlan):
            plan = plan_json(attempt, planner)
        else:
            reason = attempt.reason
        answer = self._api.rpc(
            "billing_api_retry_quarantined",
            {
                "p_id": quarantine_id,
                "p_event_id": attempt.event_id,
                "p_plan": plan,
                "p_reason": reason,
                "p_actor": actor,
                "p_now": iso(now),
            },
        )
        if answer["status"] == "not_found":
            raise NotFound(
                f"no quarantined event {quarantine_id}",
                hint="see: cloudgreet-billing quarantine list --status all",
            )
        return EventResult(
            attempt.event_id,
            answer["status"],
            attempt.created,
            error=answer.get("error"),
            quarantine_id=quarantine_id,
            alerts_opened=int(answer.get("alerts_opened", 0)),
            alerts_resolved=int(answer.get("alerts_resolved", 0)),
            dunning_scheduled=int(answer.get("dunning_scheduled", 0)),
            dunning_canceled=int(answer.get("dunning_canceled", 0)),
        )

    def dismiss_quarantined(
        self, quarantine_id: int, *, reason: str | None, actor: str, now: datetime
    ) -> QuarantinedEvent:
        from cloudgreet_billing.errors import BadInput, NotFound

        answer = self._api.rpc(
            "billing_api_dismiss_quarantined",
            {"p_id": quarantine_id, "p_reason": reason, "p_actor": actor, "p_now": iso(now)},
        )
        if answer["outcome"] == "not_found":
            raise NotFound(
                f"no quarantined event {quarantine_id}",
                hint="see: cloudgreet-billing quarantine list --status all",
            )
        if answer["outcome"] == "already_settled":
            raise BadInput(
                f"quarantined event {quarantine_id} is already {answer['status']}",
                hint="only an event still in quarantine can be dismissed",
                code="already_settled",
            )
        return quarantined_of(answer["row"])

    # --- drift ----------------------------------------------------------------------
    def mirrored_invoices_created(
        self, since: datetime, until: datetime
    ) -> dict[str, MirroredInvoice]:
        args = {"p_since": iso(since), "p_until": iso(until)}
        rows = self._read_pages("billing_api_mirrored_invoices_created", args, "id")
        return {invoice.id: invoice for invoice in map(invoice_of, rows)}

    def mirrored_subscriptions(self) -> dict[str, MirroredSubscription]:
        rows = self._read_pages("billing_api_mirrored_subscriptions", {}, "id")
        return {subscription.id: subscription for subscription in map(subscription_of, rows)}

    def repair_invoice(
        self,
        invoice: MirroredInvoice,
        *,
        settle: str | None,
        audit: AuditDraft,
        now: datetime,
    ) -> MirroredInvoice | None:
        row = self._api.rpc(
            "billing_api_repair_invoice",
            {
                "p_invoice": invoice_json(invoice),
                "p_settle": settle,
                "p_audit": audit_json(audit),
                "p_now": iso(now),
            },
        )
        return None if row is None else invoice_of(row)

    def repair_subscription(
        self, subscription: MirroredSubscription, *, audit: AuditDraft, now: datetime
    ) -> MirroredSubscription | None:
        row = self._api.rpc(
            "billing_api_repair_subscription",
            {
                "p_subscription": subscription_json(subscription),
                "p_audit": audit_json(audit),
                "p_now": iso(now),
            },
        )
        return None if row is None else subscription_of(row)

    # --- actions --------------------------------------------------------------------
    def settle_paid_invoice(
        self, invoice: MirroredInvoice, *, resolution: str, audit: AuditDraft, now: datetime
    ) -> Settlement:
        from cloudgreet_billing.adapters.store.protocol_actions import Settlement

        settled = self._api.rpc(
            "billing_api_settle_paid_invoice",
            {
                "p_invoice": invoice_json(invoice),
                "p_resolution": resolution,
                "p_audit": audit_json(audit),
                "p_now": iso(now),
            },
        )
        return Settlement(
            resolved_alert_ids=tuple(int(alert_id) for alert_id in settled["resolved"]),
            canceled_steps=int(settled["canceled"]),
        )

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
        self._api.rpc(
            "billing_api_record_failed_attempt",
            {
                "p_alert_id": alert_id,
                "p_attempt_count": attempt_count,
                "p_failure": failure,
                "p_note": note,
                "p_audit": audit_json(audit),
                "p_now": iso(now),
                "p_declined": None if declined is None else declined_json(*declined),
            },
        )

    def open_action_required_alert(
        self, invoice: MirroredInvoice, *, failure: str, note: str, audit: AuditDraft, now: datetime
    ) -> int:
        from cloudgreet_billing.adapters.store.protocol_actions import action_required_draft

        draft = action_required_draft(invoice, failure=failure, audit=audit, now=now)
        alert_id = self._api.rpc(
            "billing_api_open_action_required_alert",
            {
                "p_draft": alert_draft_json(draft),
                "p_note": note,
                "p_audit": audit_json(audit),
                "p_now": iso(now),
            },
        )
        return int(alert_id)

    def note_alert(
        self, alert_id: int | None, *, author: str, body: str, audit: AuditDraft, now: datetime
    ) -> None:
        self._api.rpc(
            "billing_api_note_alert",
            {
                "p_alert_id": alert_id,
                "p_author": author,
                "p_body": body,
                "p_audit": audit_json(audit),
                "p_now": iso(now),
            },
        )

    def action_audit(self, target: str, action: str) -> list[AuditRecord]:
        records: list[AuditRecord] = []
        after: list[Any] | None = None
        while True:
            page = self._api.rpc(
                "billing_api_action_audit",
                {"p_target": target, "p_action": action, "p_after": after, "p_limit": PAGE_SIZE},
            )
            if not page:
                return records
            records += map(audit_record_of, page)
            after = [page[-1]["occurred_at"], page[-1]["id"]]
