"""Mirrored objects and Stripe event plans as the JSON the mirror's functions take
(section "mirror" of ``migrations/0007_supabase_api.sql``), and their answers as results.

A batch of events is applied by one call of ``billing_api_apply_event_plans``, so what
the SQL stores work out in Python while they apply an event travels with its plan:

- the dunning steps the planner gives an invoice's failure. The planner is asked for
  them with the first failure and the alert's id, which only the transaction knows, so
  it is asked twice here with made-up ones, and its steps travel as delays after the
  first failure, with the alert's id or a fixed one. A planner whose steps do not move
  with the first failure that way (``TimelinePlanner``'s do) is refused.
- a fault of the event that shows before the database sees it: the planner raised, or a
  value PostgreSQL cannot store (a NUL character, JSON ``json.dumps`` cannot write). The
  function raises it where the SQL store would meet it, so that an event recorded before
  is still a duplicate, and a skipped one is not quarantined for it.
- what to quarantine if the store refuses the event: ``reject`` of its payload, the
  reason filled in by the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from cloudgreet_billing.adapters.store.sql_mirror import _payload_of, failure_reason
from cloudgreet_billing.adapters.store.supabase.base import iso, utc, utc_time
from cloudgreet_billing.errors import StoreError

if TYPE_CHECKING:
    from cloudgreet_billing.domain.alerts import AlertDraft
    from cloudgreet_billing.domain.dunning import DunningPlanner, StepDraft
    from cloudgreet_billing.domain.events import EventPlan, EventResult, InvoiceFailure
    from cloudgreet_billing.domain.mirror import (
        MirroredCustomer,
        MirroredInvoice,
        MirroredSubscription,
    )
    from cloudgreet_billing.domain.quarantine import RejectedEvent

#: Alert ids no alert has (identities start at 1): a step carrying one names the alert.
_PROBE_ALERTS: Final = (-1, -2)
#: How far the second question moves the first failure (a day and a microsecond, so that
#: a planner that rounds to days or seconds shows it).
_PROBE_SHIFT: Final = timedelta(days=1, microseconds=1)
_MICROSECOND: Final = timedelta(microseconds=1)
#: A NUL character as ``json.dumps`` writes it: ``\u0000`` after an even number of
#: backslashes (an odd number makes it the text ``\u0000``, which any column holds).
_NUL: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
NUL_REFUSED: Final = (
    "UntranslatableCharacter: unsupported Unicode escape sequence "
    "(\\u0000 cannot be converted to text)"
)


def invoice_json(invoice: MirroredInvoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id,
        "number": invoice.number,
        "status": invoice.status,
        "currency": invoice.currency,
        "amount_due": invoice.amount_due,
        "amount_paid": invoice.amount_paid,
        "amount_remaining": invoice.amount_remaining,
        "total": invoice.total,
        "total_excluding_tax": invoice.total_excluding_tax,
        "attempt_count": invoice.attempt_count,
        "attempted": invoice.attempted,
        "next_payment_attempt": iso(invoice.next_payment_attempt),
        "due_date": iso(invoice.due_date),
        "hosted_invoice_url": invoice.hosted_invoice_url,
        "livemode": invoice.livemode,
        "raw": dict(invoice.raw),
        "stripe_created": iso(invoice.stripe_created),
        "customer_email": invoice.customer_email,
        "customer_phone": invoice.customer_phone,
        "customer_name": invoice.customer_name,
        "finalized_at": iso(invoice.finalized_at),
    }


def subscription_json(subscription: MirroredSubscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "customer_id": subscription.customer_id,
        "status": subscription.status,
        "currency": subscription.currency,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "current_period_end": iso(subscription.current_period_end),
        "collection_paused": subscription.collection_paused,
        "livemode": subscription.livemode,
        "raw": dict(subscription.raw),
        "stripe_created": iso(subscription.stripe_created),
    }


def customer_json(customer: MirroredCustomer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "email": customer.email,
        "name": customer.name,
        "phone": customer.phone,
        "currency": customer.currency,
        "delinquent": customer.delinquent,
        "deleted": customer.deleted,
        "livemode": customer.livemode,
        "raw": dict(customer.raw),
        "stripe_created": iso(customer.stripe_created),
        "default_payment_method": customer.default_payment_method,
    }


def alert_draft_json(draft: AlertDraft) -> dict[str, Any]:
    """An alert to open or add to, as the functions take it (``p_draft``, ``alert``)."""
    return {
        "type": draft.type,
        "dedupe_key": draft.dedupe_key,
        "customer_id": draft.customer_id,
        "invoice_id": draft.invoice_id,
        "amount_due": draft.amount_due,
        "currency": draft.currency,
        "stripe_event_id": draft.stripe_event_id,
        "attempt_count": draft.attempt_count,
        "last_failure": draft.last_failure,
        "details": dict(draft.details),
    }


def _failure_json(failure: InvoiceFailure, invoice: MirroredInvoice) -> dict[str, Any]:
    decline = failure.decline
    return {
        "code": failure.code,
        "message": failure.message,
        "decline_code": decline.decline_code,
        "advice_code": decline.advice_code,
        "payment_method": decline.payment_method,
    }


def rejected_json(event: RejectedEvent) -> dict[str, Any]:
    return {
        "dedupe_key": event.dedupe_key,
        "event_id": event.event_id,
        "type": event.type,
        "created": iso(event.created),
        "livemode": event.livemode,
        "source": event.source,
        "reason": event.reason,
        "payload": event.payload,
    }


def plan_json(plan: EventPlan, planner: DunningPlanner) -> dict[str, Any]:
    """What ``billing_api_mirror_apply_plan`` takes for ``plan``."""
    from cloudgreet_billing.domain.quarantine import reject

    kept = reject(_payload_of(plan), "", plan.source)
    body: dict[str, Any] = {
        "event_id": plan.event_id,
        "type": plan.type,
        "created": iso(plan.created),
        "livemode": plan.livemode,
        "source": plan.source,
        "outcome": plan.outcome,
        "quarantine": {key: value for key, value in rejected_json(kept).items() if key != "reason"},
    }
    if plan.outcome == "skipped":
        return body
    written: dict[str, Any] = {}
    if plan.invoice is not None:
        written["invoice"] = invoice_json(plan.invoice)
        if plan.failure is not None:
            written["failure"] = _failure_json(plan.failure, plan.invoice)
    if plan.subscription is not None:
        written["subscription"] = subscription_json(plan.subscription)
    if plan.customer is not None:
        written["customer"] = customer_json(plan.customer)
    if plan.alert is not None:
        written["alert"] = alert_draft_json(plan.alert)
    if plan.resolve is not None:
        written["resolve"] = list(plan.resolve)
    refused = _refusal(written)
    if refused is not None:
        # Only what the function needs to record the event, and to quarantine it.
        return {**body, "refused": refused}
    body.update(written)
    if plan.invoice is not None and plan.alert is not None and plan.alert.type == "invoice_failed":
        steps = _planned_steps(planner, plan.invoice, plan.created)
        if isinstance(steps, str):
            body["planner_error"] = steps
        else:
            body["steps"] = steps
    return body


def _refusal(written: Mapping[str, Any]) -> str | None:
    """Why PostgreSQL cannot store what the event writes, as the PostgreSQL store's
    reason would say; None when it can."""
    try:
        text = json.dumps(written, allow_nan=False)
    except (RecursionError, ValueError) as exc:
        return failure_reason(exc)
    return NUL_REFUSED if _NUL.search(text) else None


def _planned_steps(
    planner: DunningPlanner, invoice: MirroredInvoice, created: datetime
) -> list[dict[str, Any]] | str:
    """The planner's steps for a failure of ``invoice``, as delays after its first
    failure; or, when the planner fails, the reason that quarantines the event."""
    first_failures = (created, created - _PROBE_SHIFT)
    try:
        answers = [
            list(
                planner(
                    invoice_id=invoice.id,
                    customer_id=invoice.customer_id,
                    alert_id=alert_id,
                    first_failed_at=first_failed,
                )
            )
            for alert_id, first_failed in zip(_PROBE_ALERTS, first_failures, strict=True)
        ]
    except Exception as exc:  # the planner's fault is the event's, as in the SQL stores
        return failure_reason(exc)
    first, second = answers
    if len(first) != len(second):
        raise _unsupported(planner)
    return [_step_json(planner, a, b, first_failures) for a, b in zip(first, second, strict=True)]


def _step_json(
    planner: DunningPlanner,
    step: StepDraft,
    moved: StepDraft,
    first_failures: tuple[datetime, datetime],
) -> dict[str, Any]:
    delay = step.due_at - first_failures[0]
    same = (step.invoice_id, step.customer_id, step.day, step.channel, step.template) == (
        moved.invoice_id,
        moved.customer_id,
        moved.day,
        moved.channel,
        moved.template,
    )
    if not same or moved.due_at - first_failures[1] != delay:
        raise _unsupported(planner)
    of_alert = (step.alert_id, moved.alert_id) == _PROBE_ALERTS
    if not of_alert and step.alert_id != moved.alert_id:
        raise _unsupported(planner)
    return {
        "invoice_id": step.invoice_id,
        "customer_id": step.customer_id,
        "alert_id": None if of_alert else step.alert_id,
        "of_alert": of_alert,
        "day": step.day,
        "channel": step.channel,
        "template": step.template,
        "delay": delay // _MICROSECOND,
    }


def _unsupported(planner: DunningPlanner) -> StoreError:
    return StoreError(
        f"the dunning planner {type(planner).__name__} cannot be used with the Supabase "
        "REST store: its steps must follow the invoice's first failure by fixed delays",
        hint="plan dunning with a [dunning] timeline in BILLING_CONFIG",
    )


def event_results(
    plans: Sequence[EventPlan], answers: Sequence[Mapping[str, Any]]
) -> list[EventResult]:
    """``billing_api_apply_event_plans``'s answers as results: one per plan, then one per
    rejected event (those, and plans the store refused, name their event and time)."""
    from cloudgreet_billing.domain.events import EventResult

    results: list[EventResult] = []
    for index, answer in enumerate(answers):
        if "event_id" in answer:
            results.append(
                EventResult(
                    answer["event_id"],
                    answer["status"],
                    utc_time(answer.get("created")),
                    error=answer.get("error"),
                    quarantine_id=answer.get("quarantine_id"),
                )
            )
            continue
        plan = plans[index]
        results.append(
            EventResult(
                plan.event_id,
                answer["status"],
                plan.created,
                alerts_opened=answer.get("alerts_opened", 0),
                alerts_resolved=answer.get("alerts_resolved", 0),
                dunning_scheduled=answer.get("dunning_scheduled", 0),
                dunning_canceled=answer.get("dunning_canceled", 0),
            )
        )
    return results


def invoice_of(row: Mapping[str, Any]) -> MirroredInvoice:
    """A ``billing_invoices`` row as the functions' JSON writes it (``to_jsonb``), the one
    reader of it for every area."""
    from cloudgreet_billing.domain.mirror import MirroredInvoice

    excluding_tax = row["total_excluding_tax"]
    return MirroredInvoice(
        id=row["id"],
        customer_id=row["customer_id"],
        subscription_id=row["subscription_id"],
        number=row["number"],
        status=row["status"],
        currency=row["currency"],
        amount_due=int(row["amount_due"]),
        amount_paid=int(row["amount_paid"]),
        amount_remaining=int(row["amount_remaining"]),
        total=int(row["total"]),
        total_excluding_tax=None if excluding_tax is None else int(excluding_tax),
        attempt_count=int(row["attempt_count"]),
        attempted=bool(row["attempted"]),
        next_payment_attempt=utc_time(row["next_payment_attempt"]),
        due_date=utc_time(row["due_date"]),
        hosted_invoice_url=row["hosted_invoice_url"],
        livemode=bool(row["livemode"]),
        raw=row["raw"],
        stripe_created=utc(row["stripe_created"]),
        first_failed_at=utc_time(row["first_failed_at"]),
        last_failure_code=row["last_failure_code"],
        last_failure_message=row["last_failure_message"],
        customer_email=row["customer_email"],
        customer_phone=row["customer_phone"],
        customer_name=row["customer_name"],
        finalized_at=utc_time(row["finalized_at"]),
        last_decline_code=row.get("last_decline_code"),
        last_advice_code=row.get("last_advice_code"),
        last_failure_payment_method=row.get("last_failure_payment_method"),
    )


def subscription_of(row: Mapping[str, Any]) -> MirroredSubscription:
    """A ``billing_subscriptions`` row as the functions' JSON writes it."""
    from cloudgreet_billing.domain.mirror import MirroredSubscription

    return MirroredSubscription(
        id=row["id"],
        customer_id=row["customer_id"],
        status=row["status"],
        currency=row["currency"],
        cancel_at_period_end=bool(row["cancel_at_period_end"]),
        current_period_end=utc_time(row["current_period_end"]),
        collection_paused=bool(row["collection_paused"]),
        livemode=bool(row["livemode"]),
        raw=row["raw"],
        stripe_created=utc_time(row["stripe_created"]),
    )
