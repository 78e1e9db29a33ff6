"""The alerts and dunning areas of the Supabase store (AlertsOps, DunningOps), over the
functions of 0007_supabase_api.sql's section "alerts, dunning". A claim reads its steps'
exemptions and a confirmation refuses exempt customers, as ``sql_dunning.py`` does;
exempting and unexempting (ExemptionsOps) are the "exemptions, recovery" area's.

Every write is one function call, so one transaction, with its audit rows inside it, as
``sql_alerts.py`` and ``sql_dunning.py`` write them. ``claim_due_steps`` is one call that
locks the due rows ``FOR UPDATE SKIP LOCKED``: concurrent runs, each on its own HTTP
connection and so its own transaction, never receive the same step.

Listings read page by key (``_paged``): a function's jsonb answer is one value, which
``db-max-rows`` does not cut, but each page stays at ``PAGE_SIZE`` rows to keep every call
well under the role's statement timeout, and the reading stops only at an empty page or
the caller's limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.sql_dunning import REVIEW_CONFIRMED, REVIEW_UNCONFIRMED
from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase, iso, utc, utc_time
from cloudgreet_billing.adapters.store.supabase.client import PAGE_SIZE
from cloudgreet_billing.adapters.store.supabase.event_plans import alert_draft_json

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_alerts import (
        AlertQuery,
        LedgerTotal,
        RaisedAlert,
    )
    from cloudgreet_billing.domain.alerts import Alert, AlertDraft, AlertNote
    from cloudgreet_billing.domain.dunning import (
        ClaimedStep,
        DunningStep,
        EscalationCandidate,
        InvoiceFacts,
        InvoiceReach,
        StepDraft,
        StepOutcome,
    )
    from cloudgreet_billing.domain.exemptions import Exemption

Row = dict[str, Any]

#: Ids sent in one call (dunning_reach of given invoices, notes of given alerts).
ID_BATCH = 500
#: The outcome statuses ``record_step_outcomes`` knows.
OUTCOME_STATUSES = frozenset({"sent", "failed", "skipped", "canceled"})


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _texts(values: Sequence[str] | None) -> list[str] | None:
    """A filter of values as the functions take it: a JSON array, or null for "any"."""
    return None if values is None else list(values)


def _exemption(row: Row) -> Exemption:
    """A ``billing_dunning_exemptions`` row (``to_jsonb``), as a claim carries it."""
    from cloudgreet_billing.domain.exemptions import Exemption

    return Exemption(
        customer_id=row["customer_id"],
        reason=row["reason"],
        actor=row["actor"],
        created_at=utc(row["created_at"]),
    )


def _by_time_and_id(column: str) -> Callable[[Row], Any]:
    """The page key of a listing ordered by (``column``, id)."""
    return lambda row: {column: row[column], "id": row["id"]}


class SupabaseDunning(SupabaseBase):
    # --- reading pages ----------------------------------------------------------------
    def _paged(
        self,
        fn: str,
        args: Mapping[str, Any],
        after: Callable[[Row], Any],
        limit: int | None = None,
    ) -> list[Row]:
        """Up to ``limit`` rows (all when None) of a listing function, page by key."""
        rows: list[Row] = []
        cursor: Any = None
        while limit is None or len(rows) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(rows))
            page: list[Row] = self._api.rpc(fn, {**args, "p_after": cursor, "p_limit": size}) or []
            if not page:
                break
            rows.extend(page)
            cursor = after(page[-1])
        return rows

    # --- alerts: rows -----------------------------------------------------------------
    @staticmethod
    def _alert(row: Row) -> Alert:
        from cloudgreet_billing.domain.alerts import Alert

        return Alert(
            id=int(row["id"]),
            type=row["type"],
            status=row["status"],
            dedupe_key=row["dedupe_key"],
            customer_id=row["customer_id"],
            invoice_id=row["invoice_id"],
            amount_due=_optional_int(row["amount_due"]),
            currency=row["currency"],
            stripe_event_id=row["stripe_event_id"],
            attempt_count=int(row["attempt_count"]),
            last_failure=row["last_failure"],
            details=row["details"] or {},
            created_at=utc(row["created_at"]),
            updated_at=utc(row["updated_at"]),
            acknowledged_at=utc_time(row["acknowledged_at"]),
            resolved_at=utc_time(row["resolved_at"]),
            resolution=row["resolution"],
        )

    def _optional_alert(self, row: Row | None) -> Alert | None:
        return None if row is None else self._alert(row)

    @staticmethod
    def _alert_filters(query: AlertQuery) -> dict[str, Any]:
        return {
            "p_types": _texts(query.types),
            "p_statuses": _texts(query.statuses),
            "p_customer_id": query.customer_id,
            "p_invoice_id": query.invoice_id,
            "p_since": iso(query.since),
            "p_until": iso(query.until),
        }

    # --- alerts: reads ----------------------------------------------------------------
    def get_alert(self, alert_id: int) -> Alert | None:
        return self._optional_alert(
            self._api.rpc("billing_api_get_alert", {"p_alert_id": alert_id})
        )

    def list_alerts(self, query: AlertQuery) -> list[Alert]:
        rows = self._paged(
            "billing_api_list_alerts",
            self._alert_filters(query),
            _by_time_and_id("created_at"),
            query.limit,
        )
        return [self._alert(row) for row in rows]

    def count_alerts(self, query: AlertQuery) -> int:
        return int(self._api.rpc("billing_api_count_alerts", self._alert_filters(query)))

    def alerts_touched(self, since: datetime, until: datetime) -> list[Alert]:
        rows = self._paged(
            "billing_api_alerts_touched",
            {"p_since": iso(since), "p_until": iso(until)},
            _by_time_and_id("created_at"),
        )
        return [self._alert(row) for row in rows]

    def alert_notes(self, alert_id: int) -> list[AlertNote]:
        return self.alert_notes_for([alert_id]).get(alert_id, [])

    def alert_notes_for(self, alert_ids: Sequence[int]) -> dict[int, list[AlertNote]]:
        from cloudgreet_billing.domain.alerts import AlertNote

        notes: dict[int, list[AlertNote]] = {}
        unique = sorted(set(alert_ids))
        for start in range(0, len(unique), ID_BATCH):
            rows = self._paged(
                "billing_api_alert_notes",
                {"p_alert_ids": unique[start : start + ID_BATCH]},
                _by_time_and_id("created_at"),
            )
            for row in rows:
                notes.setdefault(int(row["alert_id"]), []).append(
                    AlertNote(
                        author=row["author"], body=row["body"], created_at=utc(row["created_at"])
                    )
                )
        return notes

    # --- alerts: transitions ----------------------------------------------------------
    def raise_alert(self, draft: AlertDraft, *, actor: str, now: datetime) -> RaisedAlert:
        from cloudgreet_billing.adapters.store.protocol_alerts import RaisedAlert

        raised = self._api.rpc(
            "billing_api_raise_alert",
            {
                "p_draft": alert_draft_json(draft),
                "p_actor": actor,
                "p_now": iso(now),
            },
        )
        return RaisedAlert(alert=self._alert(raised["alert"]), opened=bool(raised["opened"]))

    def acknowledge_alert(self, alert_id: int, *, actor: str, now: datetime) -> Alert | None:
        return self._optional_alert(
            self._api.rpc(
                "billing_api_acknowledge_alert",
                {"p_alert_id": alert_id, "p_actor": actor, "p_now": iso(now)},
            )
        )

    def resolve_alert(
        self, alert_id: int, *, resolution: str, actor: str, now: datetime
    ) -> Alert | None:
        return self._optional_alert(
            self._api.rpc(
                "billing_api_resolve_alert",
                {
                    "p_alert_id": alert_id,
                    "p_resolution": resolution,
                    "p_actor": actor,
                    "p_now": iso(now),
                },
            )
        )

    def add_alert_note(
        self, alert_id: int, *, author: str, body: str, now: datetime
    ) -> AlertNote | None:
        from cloudgreet_billing.domain.alerts import AlertNote

        row = self._api.rpc(
            "billing_api_add_alert_note",
            {"p_alert_id": alert_id, "p_author": author, "p_body": body, "p_now": iso(now)},
        )
        if row is None:
            return None
        return AlertNote(author=row["author"], body=row["body"], created_at=utc(row["created_at"]))

    def resolve_invoice_alerts(
        self, invoice_id: str, *, resolution: str, actor: str, now: datetime
    ) -> tuple[list[int], int]:
        done = self._api.rpc(
            "billing_api_resolve_invoice_alerts",
            {
                "p_invoice_id": invoice_id,
                "p_resolution": resolution,
                "p_actor": actor,
                "p_now": iso(now),
            },
        )
        return [int(alert_id) for alert_id in done["resolved"]], int(done["canceled"])

    # --- alerts: ledger thresholds ------------------------------------------------------
    def ledger_totals(self, *, kind: str, since: datetime, until: datetime) -> list[LedgerTotal]:
        from cloudgreet_billing.adapters.store.protocol_alerts import LedgerTotal

        rows = self._paged(
            "billing_api_ledger_totals",
            {"p_kind": kind, "p_since": iso(since), "p_until": iso(until)},
            lambda row: {"customer_id": row["customer_id"], "currency": row["currency"]},
        )
        return [
            LedgerTotal(
                row["customer_id"], row["currency"], int(row["amount"]), int(row["entries"])
            )
            for row in rows
        ]

    def ledger_created_window(self, created_at: datetime) -> tuple[datetime, datetime] | None:
        found = self._api.rpc(
            "billing_api_ledger_created_window", {"p_created_at": iso(created_at)}
        )
        return None if found is None else (utc(found["start"]), utc(found["end"]))

    # --- dunning: rows ----------------------------------------------------------------
    @staticmethod
    def _step(row: Row) -> DunningStep:
        from cloudgreet_billing.domain.dunning import DunningStep

        return DunningStep(
            id=int(row["id"]),
            invoice_id=row["invoice_id"],
            customer_id=row["customer_id"],
            alert_id=_optional_int(row["alert_id"]),
            day=int(row["day"]),
            channel=row["channel"],
            template=row["template"],
            status=row["status"],
            due_at=utc(row["due_at"]),
            sent_at=utc_time(row["sent_at"]),
            attempts=int(row["attempts"]),
            last_error=row["last_error"],
            reason=row["reason"],
            provider_message_id=row["provider_message_id"],
            claimed_by=row["claimed_by"],
            lease_expires_at=utc_time(row["lease_expires_at"]),
            confirmed_at=utc_time(row["confirmed_at"]),
        )

    def _optional_step(self, row: Row | None) -> DunningStep | None:
        return None if row is None else self._step(row)

    @staticmethod
    def _facts(invoice_id: str, customer_id: str, facts: Row) -> InvoiceFacts:
        """``billing_api_dunning_facts`` as a message needs them, with the freshest contact
        (as ``DunningSql._facts`` reads ``FACT_COLUMNS``)."""
        from cloudgreet_billing.domain.dunning import (
            CustomerContact,
            InvoiceContact,
            InvoiceFacts,
            freshest_contact,
        )

        mirrored = facts.get("customer")
        customer = None
        if mirrored is not None:
            customer = CustomerContact(
                email=mirrored["email"],
                phone=mirrored["phone"],
                name=mirrored["name"],
                deleted=bool(mirrored["deleted"]),
                observed_at=utc(mirrored["observed_at"]),
            )
        contact = freshest_contact(
            customer,
            InvoiceContact(
                email=facts["customer_email"],
                phone=facts["customer_phone"],
                name=facts["customer_name"],
                finalized_at=utc_time(facts["finalized_at"]),
            ),
        )
        return InvoiceFacts(
            invoice_id=invoice_id,
            customer_id=customer_id,
            status=facts["status"],
            number=facts["number"],
            amount_due=_optional_int(facts["amount_due"]),
            amount_remaining=_optional_int(facts["amount_remaining"]),
            currency=facts["currency"],
            hosted_invoice_url=facts["hosted_invoice_url"],
            first_failed_at=utc_time(facts["first_failed_at"]),
            customer_name=contact.name,
            email=contact.email,
            phone=contact.phone,
            customer_deleted=contact.customer_deleted,
            next_payment_attempt=utc_time(facts.get("next_payment_attempt")),
            decline_code=facts.get("last_decline_code"),
            advice_code=facts.get("last_advice_code"),
        )

    def _claimed(self, row: Row) -> ClaimedStep:
        """A step with its facts and its invoice's timeline (``latest_due``, ``channels``),
        as ``DunningSql._claimed`` builds it."""
        from cloudgreet_billing.domain.dunning import ClaimedStep

        step = self._step(row)
        latest_due = row.get("latest_due")
        channels = row.get("channels")
        exemption = row.get("exemption")
        return ClaimedStep(
            step=step,
            invoice=self._facts(step.invoice_id, step.customer_id, row["facts"]),
            superseded=latest_due is not None and step.day < int(latest_due),
            channels=frozenset(channels) if channels else frozenset({step.channel}),
            exemption=None if exemption is None else _exemption(exemption),
        )

    # --- dunning: scheduling ------------------------------------------------------------
    def schedule_steps(self, steps: Sequence[StepDraft], now: datetime) -> int:
        if not steps:
            return 0
        # One call, one statement: a step the table refuses writes none of them, as the SQL
        # stores' one transaction does; ON CONFLICT makes a repeated call a no-op.
        drafts = [
            {
                "invoice_id": step.invoice_id,
                "customer_id": step.customer_id,
                "alert_id": step.alert_id,
                "day": step.day,
                "channel": step.channel,
                "template": step.template,
                "due_at": iso(step.due_at),
            }
            for step in steps
        ]
        return int(
            self._api.rpc("billing_api_schedule_steps", {"p_steps": drafts, "p_now": iso(now)})
        )

    def cancel_pending_steps(self, invoice_id: str, reason: str, now: datetime) -> int:
        return int(
            self._api.rpc(
                "billing_api_cancel_pending_steps",
                {"p_invoice_id": invoice_id, "p_reason": reason, "p_now": iso(now)},
            )
        )

    # --- dunning: a run -----------------------------------------------------------------
    def expire_leases(self, now: datetime) -> int:
        return int(
            self._api.rpc(
                "billing_api_expire_leases",
                {
                    "p_now": iso(now),
                    "p_unconfirmed": REVIEW_UNCONFIRMED,
                    "p_confirmed": REVIEW_CONFIRMED,
                },
            )
        )

    def count_needs_review(self) -> int:
        return int(self._api.rpc("billing_api_count_needs_review"))

    def count_due_steps(self, now: datetime) -> int:
        return int(self._api.rpc("billing_api_count_due_steps", {"p_now": iso(now)}))

    def due_steps(self, now: datetime, limit: int | None) -> list[ClaimedStep]:
        rows = self._paged(
            "billing_api_due_steps", {"p_now": iso(now)}, _by_time_and_id("due_at"), limit
        )
        return [self._claimed(row) for row in rows]

    def claim_due_steps(
        self, *, now: datetime, lease_until: datetime, run_id: str, limit: int
    ) -> list[ClaimedStep]:
        rows = self._api.rpc(
            "billing_api_claim_due_steps",
            {
                "p_now": iso(now),
                "p_lease_until": iso(lease_until),
                "p_run_id": run_id,
                "p_limit": limit,
            },
        )
        claimed = [self._claimed(row) for row in rows or []]
        claimed.sort(key=lambda item: (item.step.due_at, item.step.id))
        return claimed

    def confirm_sends(
        self,
        step_ids: Sequence[int],
        run_id: str,
        now: datetime,
        lease_until: datetime | None = None,
    ) -> set[int]:
        if not step_ids:
            return set()
        confirmed = self._api.rpc(
            "billing_api_confirm_sends",
            {
                "p_step_ids": list(step_ids),
                "p_run_id": run_id,
                "p_now": iso(now),
                "p_lease_until": iso(lease_until),
            },
        )
        return {int(step_id) for step_id in confirmed or []}

    def record_step_outcomes(
        self,
        outcomes: Sequence[StepOutcome],
        run_id: str,
        now: datetime,
        *,
        actor: str = "dunning run",
    ) -> int:
        unknown = {o.status for o in outcomes} - OUTCOME_STATUSES
        if unknown:
            raise ValueError(f"not an outcome status: {', '.join(sorted(unknown))}")
        if not outcomes:
            return 0
        recorded = self._api.rpc(
            "billing_api_record_step_outcomes",
            {
                "p_outcomes": [
                    {
                        "step_id": o.step_id,
                        "status": o.status,
                        "reason": o.reason,
                        "error": o.error,
                        "provider_message_id": o.provider_message_id,
                        "undeliverable": o.undeliverable,
                    }
                    for o in outcomes
                ],
                "p_run_id": run_id,
                "p_now": iso(now),
                "p_actor": actor,
            },
        )
        return int(recorded)

    def release_claims(self, step_ids: Sequence[int], run_id: str, now: datetime) -> int:
        if not step_ids:
            return 0
        return int(
            self._api.rpc(
                "billing_api_release_claims",
                {"p_step_ids": list(step_ids), "p_run_id": run_id, "p_now": iso(now)},
            )
        )

    # --- dunning: operators -------------------------------------------------------------
    def list_steps(
        self,
        *,
        statuses: Sequence[str] | None = None,
        invoice_id: str | None = None,
        alert_id: int | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 50,
    ) -> list[DunningStep]:
        rows = self._paged(
            "billing_api_list_steps",
            {
                "p_statuses": _texts(statuses),
                "p_invoice_id": invoice_id,
                "p_alert_id": alert_id,
                "p_customer_id": customer_id,
                "p_since": iso(since),
                "p_until": iso(until),
            },
            _by_time_and_id("due_at"),
            limit,
        )
        return [self._step(row) for row in rows]

    def count_steps(
        self,
        *,
        statuses: Sequence[str] | None = None,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        return int(
            self._api.rpc(
                "billing_api_count_steps",
                {
                    "p_statuses": _texts(statuses),
                    "p_invoice_id": invoice_id,
                    "p_customer_id": customer_id,
                    "p_since": iso(since),
                    "p_until": iso(until),
                },
            )
        )

    def get_step(self, step_id: int) -> DunningStep | None:
        return self._optional_step(self._api.rpc("billing_api_get_step", {"p_step_id": step_id}))

    def mark_step_sent(
        self, step_id: int, from_statuses: Sequence[str], reason: str, now: datetime
    ) -> DunningStep | None:
        return self._optional_step(
            self._api.rpc(
                "billing_api_mark_step_sent",
                {
                    "p_step_id": step_id,
                    "p_from_statuses": list(from_statuses),
                    "p_reason": reason,
                    "p_now": iso(now),
                },
            )
        )

    def requeue_step(
        self, step_id: int, from_statuses: Sequence[str], now: datetime
    ) -> DunningStep | None:
        return self._optional_step(
            self._api.rpc(
                "billing_api_requeue_step",
                {"p_step_id": step_id, "p_from_statuses": list(from_statuses), "p_now": iso(now)},
            )
        )

    def unmark_step_sent(
        self, step_id: int, *, marked_reason: str, status: str, reason: str | None, now: datetime
    ) -> DunningStep | None:
        return self._optional_step(
            self._api.rpc(
                "billing_api_unmark_step_sent",
                {
                    "p_step_id": step_id,
                    "p_marked_reason": marked_reason,
                    "p_status": status,
                    "p_reason": reason,
                    "p_now": iso(now),
                },
            )
        )

    def invoice_facts(self, invoice_id: str) -> InvoiceFacts | None:
        facts = self._api.rpc("billing_api_invoice_facts", {"p_invoice_id": invoice_id})
        if facts is None:
            return None
        return self._facts(invoice_id, facts["invoice_customer_id"], facts)

    def dunning_reach(self, invoice_ids: Sequence[str] | None = None) -> list[InvoiceReach]:
        from cloudgreet_billing.domain.dunning import InvoiceReach

        def by_invoice(row: Row) -> Any:
            return row["invoice_id"]

        rows: list[Row] = []
        if invoice_ids is None:
            rows = self._paged("billing_api_dunning_reach", {"p_invoice_ids": None}, by_invoice)
        else:
            unique = sorted(set(invoice_ids))
            for start in range(0, len(unique), ID_BATCH):
                batch = {"p_invoice_ids": unique[start : start + ID_BATCH]}
                rows.extend(self._paged("billing_api_dunning_reach", batch, by_invoice))
        reaches = [
            InvoiceReach(
                self._facts(row["invoice_id"], row["customer_id"], row["facts"]),
                frozenset(row["channels"] or ()),
                frozenset(row["scheduled"] or ()),
            )
            for row in rows
        ]
        reaches.sort(key=lambda reach: reach.facts.invoice_id)
        return reaches

    # --- dunning: escalation ------------------------------------------------------------
    def escalation_candidates(self, threshold: int) -> list[EscalationCandidate]:
        from cloudgreet_billing.domain.dunning import EscalationCandidate

        rows = self._paged(
            "billing_api_escalation_candidates",
            {"p_threshold": threshold},
            lambda row: row["invoice_id"],
        )
        return [
            EscalationCandidate(
                invoice_id=row["invoice_id"],
                customer_id=row["customer_id"],
                completed=int(row["completed"]),
                amount_due=_optional_int(row["amount_due"]),
                currency=row["currency"],
                alert_id=_optional_int(row["alert_id"]),
            )
            for row in rows
        ]

    def open_exhaustion_alert(
        self, candidate: EscalationCandidate, details: Mapping[str, Any], now: datetime
    ) -> int | None:
        opened = self._api.rpc(
            "billing_api_open_exhaustion_alert",
            {
                "p_candidate": {
                    "invoice_id": candidate.invoice_id,
                    "customer_id": candidate.customer_id,
                    "amount_due": candidate.amount_due,
                    "currency": candidate.currency,
                },
                "p_details": dict(details),
                "p_now": iso(now),
            },
        )
        return _optional_int(opened)

    def update_alert_details(
        self, alert_id: int, details: Mapping[str, Any], now: datetime
    ) -> None:
        self._api.rpc(
            "billing_api_update_alert_details",
            {"p_alert_id": alert_id, "p_details": dict(details), "p_now": iso(now)},
        )
