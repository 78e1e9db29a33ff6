"""What a Stripe event means for the store, decided without touching it.

``plan_event`` turns one event (plain JSON, from the Events API, a webhook or a file) into
an ``EventPlan``: the mirror rows it carries, the alert it raises or the invoice whose alerts
it settles. The store applies a plan in one transaction together with the record that the
event was processed (``Store.apply_event_plans``).

Routing is by the type's family *and* the object's kind, because ``customer.*`` also names
events about cards, tax ids and discounts, which are not customers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

from cloudgreet_billing.domain.alerts import AlertDraft, invoice_alert
from cloudgreet_billing.domain.mirror import (
    MirroredCustomer,
    MirroredInvoice,
    MirroredSubscription,
    parse_customer,
    parse_invoice,
    parse_subscription,
)
from cloudgreet_billing.domain.timefmt import utc_from_unix
from cloudgreet_billing.errors import BadInput

EventSource = Literal["api", "webhook", "file", "backfill"]

#: Event types that settle an invoice, with the resolution recorded on its alerts.
RESOLVING_TYPES: Final = {
    "invoice.paid": "invoice paid",
    "invoice.payment_succeeded": "invoice paid",
    "invoice.voided": "invoice voided",
    "invoice.marked_uncollectible": "invoice marked uncollectible",
}
#: Invoice events with no invoice to mirror (a preview without an id).
_PREVIEW_TYPES: Final = frozenset({"invoice.upcoming", "invoice.will_be_due"})


@dataclass(frozen=True, slots=True)
class InvoiceFailure:
    """A failed payment attempt, as recorded on the mirrored invoice."""

    code: str | None
    message: str

    def summary(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


@dataclass(frozen=True, slots=True)
class EventPlan:
    """Everything one event asks of the store."""

    event_id: str
    type: str
    created: datetime
    livemode: bool
    source: EventSource
    #: ``skipped``: a type this toolkit does not act on (still recorded as processed).
    outcome: Literal["applied", "skipped"]
    invoice: MirroredInvoice | None = None
    subscription: MirroredSubscription | None = None
    customer: MirroredCustomer | None = None
    failure: InvoiceFailure | None = None
    alert: AlertDraft | None = None
    #: ``(invoice_id, resolution)``: settle every unresolved alert of that invoice.
    resolve: tuple[str, str] | None = None


def plan_event(event: Mapping[str, Any], source: EventSource) -> EventPlan:
    """The plan for one Stripe event object; ``BadInput`` when it is not one."""
    if not isinstance(event, Mapping) or event.get("object") not in ("event", None):
        raise BadInput("not a Stripe event object", hint="expected {'object': 'event', …}")
    event_id = event.get("id")
    event_type = event.get("type")
    created = event.get("created")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise BadInput(f"event id {event_id!r} is not a Stripe event id (evt_…)")
    if not isinstance(event_type, str) or not isinstance(created, int):
        raise BadInput(f"event {event_id} has no type or created time")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise BadInput(f"event {event_id} has no data.object")
    # The skipped plan; the kinds acted on replace its outcome and add what they carry.
    base = EventPlan(
        event_id=event_id,
        type=event_type,
        created=utc_from_unix(created),
        livemode=bool(event.get("livemode", False)),
        source=source,
        outcome="skipped",
    )
    kind = obj.get("object")
    if event_type.startswith("invoice.") and kind == "invoice":
        if event_type in _PREVIEW_TYPES or not obj.get("id"):
            return base
        return _invoice_plan(base, event_type, obj)
    if event_type.startswith("customer.subscription.") and kind == "subscription":
        return replace(base, outcome="applied", subscription=parse_subscription(obj))
    if event_type.startswith("customer.") and kind == "customer":
        if event_type == "customer.deleted":
            obj = {**obj, "deleted": True}
        return replace(base, outcome="applied", customer=parse_customer(obj))
    if event_type == "billing.alert.triggered" and kind == "billing.alert_triggered":
        return replace(base, outcome="applied", alert=_usage_alert(event_id, obj))
    return base


def _invoice_plan(base: EventPlan, event_type: str, obj: Mapping[str, Any]) -> EventPlan:
    invoice = parse_invoice(obj)
    event_id = base.event_id
    if event_type == "invoice.payment_failed":
        failure = failure_of(obj)
        alert = invoice_alert(
            "invoice_failed",
            invoice,
            stripe_event_id=event_id,
            attempt_count=max(invoice.attempt_count, 1),
            last_failure=failure.summary(),
            details={"opened_by": event_id},
        )
        return replace(base, outcome="applied", invoice=invoice, failure=failure, alert=alert)
    if event_type == "invoice.payment_action_required":
        alert = invoice_alert(
            "payment_action_required",
            invoice,
            stripe_event_id=event_id,
            attempt_count=invoice.attempt_count,
            last_failure="the customer must authenticate the payment (3-D Secure)",
            details={"opened_by": event_id, "hosted_invoice_url": invoice.hosted_invoice_url},
        )
        return replace(base, outcome="applied", invoice=invoice, alert=alert)
    resolution = RESOLVING_TYPES.get(event_type)
    if resolution is not None:
        return replace(
            base,
            outcome="applied",
            invoice=invoice,
            resolve=(invoice.id, f"{resolution} ({event_id})"),
        )
    return replace(base, outcome="applied", invoice=invoice)


def failure_of(invoice: Mapping[str, Any]) -> InvoiceFailure:
    """Why a payment failed, from whatever the invoice carries.

    Webhook invoices rarely expand the payment: an expanded ``payment_intent`` (older
    shape) gives the decline, else ``last_finalization_error``, else a generic line.
    """
    for container, key in (
        ("payment_intent", "last_payment_error"),
        (None, "last_finalization_error"),
    ):
        source = invoice.get(container) if container else invoice
        error = source.get(key) if isinstance(source, Mapping) else None
        if isinstance(error, Mapping) and (error.get("message") or error.get("code")):
            code = error.get("decline_code") or error.get("code")
            return InvoiceFailure(code=code, message=str(error.get("message") or code))
    attempts = invoice.get("attempt_count") or 1
    return InvoiceFailure(code=None, message=f"payment attempt {attempts} failed")


def _usage_alert(event_id: str, obj: Mapping[str, Any]) -> AlertDraft:
    """``billing.alert.triggered``: a Stripe usage alert crossed its threshold."""
    given_alert = obj.get("alert")
    alert: Mapping[str, Any] = given_alert if isinstance(given_alert, Mapping) else {}
    customer = obj.get("customer")
    customer_id = customer if isinstance(customer, str) and customer.startswith("cus_") else None
    given_threshold = alert.get("usage_threshold")
    threshold: Mapping[str, Any] = given_threshold if isinstance(given_threshold, Mapping) else {}
    meter = threshold.get("meter")
    meter_id = meter.get("id") if isinstance(meter, Mapping) else meter
    alert_id = alert.get("id") or "unknown"
    title = alert.get("title") or "usage alert"
    value = obj.get("value")
    return AlertDraft(
        type="threshold_exceeded",
        dedupe_key=f"threshold_exceeded:stripe:{alert_id}:{customer_id or '-'}",
        customer_id=customer_id,
        stripe_event_id=event_id,
        last_failure=f"{title}: usage {value} reached {threshold.get('gte')}",
        details={
            "opened_by": event_id,
            "source": "stripe",
            "stripe_alert": alert_id,
            "title": title,
            "value": value,
            "threshold": threshold.get("gte"),
            "meter": meter_id,
        },
    )


@dataclass(frozen=True, slots=True)
class EventResult:
    """What applying one plan did. ``duplicate``: already processed, nothing changed;
    ``failed``: rolled back and left unprocessed, so a redelivery retries it."""

    event_id: str
    status: Literal["applied", "skipped", "duplicate", "failed"]
    created: datetime
    error: str | None = None
    alerts_opened: int = 0
    alerts_resolved: int = 0
    dunning_scheduled: int = 0
    dunning_canceled: int = 0
