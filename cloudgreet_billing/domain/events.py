"""What a Stripe event means for the store, decided without touching it.

``plan_event`` turns one event (plain JSON, from the Events API, a webhook or a file) into
an ``EventPlan``: the mirror rows it carries, the alert it raises or the invoice whose alerts
it settles. The store applies a plan in one transaction together with the record that the
event was processed (``Store.apply_event_plans``).

Routing is by the type's family *and* the object's kind, because ``customer.*`` also names
events about cards, tax ids and discounts, which are not customers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from cloudgreet_billing.domain.alerts import AlertDraft, invoice_alert
from cloudgreet_billing.domain.merge import settlement
from cloudgreet_billing.domain.mirror import (
    MirroredCustomer,
    MirroredInvoice,
    MirroredSubscription,
    parse_customer,
    parse_invoice,
    parse_subscription,
)
from cloudgreet_billing.domain.stripe_fields import Fields, describe, is_stripe_id, quote
from cloudgreet_billing.errors import BadInput

EventSource = Literal["api", "webhook", "file", "backfill"]

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
    #: What the event opens or adds to. Its content is merged by ``(attempt_count,
    #: created, event_id)`` (``domain.merge``), so its details name no delivery.
    alert: AlertDraft | None = None
    #: ``(invoice_id, resolution)``: the object is settled (paid, void, uncollectible), so
    #: the invoice's unresolved alerts are resolved and its pending steps canceled, with
    #: the resolution of the invoice's earliest settling event (``domain.merge``).
    resolve: tuple[str, str] | None = None
    #: The event as received, quarantined with its reason if the store cannot apply it.
    event: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


class NotAnEvent(BadInput):
    """A value that is not a Stripe event at all: a file of invoices, a number, a list."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, code="not_an_event")


def is_event(value: Any) -> bool:
    """Whether ``value`` presents itself as a Stripe event: ``"object": "event"``, or (as
    some tools save them) no ``object`` and an ``evt_`` id. Such a value is planned, and
    quarantined if it cannot be applied; anything else is not an event."""
    if not isinstance(value, Mapping):
        return False
    kind = value.get("object")
    if kind is None:
        event_id = value.get("id")
        return isinstance(event_id, str) and event_id.startswith("evt_")
    return bool(kind == "event")


def what_it_is(value: Any) -> str:
    """A value found where an event belongs, as a refusal names it."""
    if isinstance(value, Mapping) and isinstance(value.get("object"), str):
        return f"an object of type {quote(value['object'])}"
    return describe(value)


def plan_event(event: Any, source: EventSource) -> EventPlan:
    """The plan for one Stripe event object.

    ``NotAnEvent`` when it is not one; ``BadInput`` naming the field when it is an event
    that cannot be applied (a wrong type, an id without its prefix, a time out of range).
    """
    if not is_event(event):
        raise NotAnEvent(
            f"found {what_it_is(event)} where a Stripe event was expected",
            hint="expected {'object': 'event', …}",
        )
    fields = Fields(event, "event")
    event_id = fields.id("id", "evt_")
    fields.what = f"event {event_id}"
    event_type = fields.string("type")
    created = fields.time("created")
    livemode = fields.boolean("livemode")
    data = fields.nested("data")
    obj = None if data is None else data.raw("object")
    if not isinstance(obj, Mapping):
        raise fields.bad("data.object", "an object", obj)
    # Every plan shares the event's own fields; the kinds acted on add what they carry.
    # One construction each (a sync plans every event; ``dataclasses.replace`` of a base
    # plan cost several times as much).
    kind = obj.get("object")

    def plan(**carried: Any) -> EventPlan:
        return EventPlan(event_id, event_type, created, livemode, source, **carried, event=event)

    if event_type.startswith("invoice.") and kind == "invoice":
        if event_type in _PREVIEW_TYPES or not obj.get("id"):
            return plan(outcome="skipped")
        return _invoice_plan(plan, event_id, event_type, obj)
    if event_type.startswith("customer.subscription.") and kind == "subscription":
        return plan(outcome="applied", subscription=parse_subscription(obj))
    if event_type.startswith("customer.") and kind == "customer":
        if event_type == "customer.deleted":
            obj = {**obj, "deleted": True}
        return plan(outcome="applied", customer=parse_customer(obj))
    if event_type == "billing.alert.triggered" and kind == "billing.alert_triggered":
        return plan(outcome="applied", alert=_usage_alert(event_id, obj))
    return plan(outcome="skipped")


def _invoice_plan(
    plan: Callable[..., EventPlan], event_id: str, event_type: str, obj: Mapping[str, Any]
) -> EventPlan:
    invoice = parse_invoice(obj)
    resolution = settlement(invoice.status, event_id)
    applied: dict[str, Any] = {
        "outcome": "applied",
        "invoice": invoice,
        "resolve": None if resolution is None else (invoice.id, resolution),
    }
    if event_type == "invoice.payment_failed":
        failure = failure_of(obj)
        alert = invoice_alert(
            "invoice_failed",
            invoice,
            stripe_event_id=event_id,
            attempt_count=max(invoice.attempt_count, 1),
            last_failure=failure.summary(),
            details={},
        )
        return plan(**applied, failure=failure, alert=alert)
    if event_type == "invoice.payment_action_required":
        alert = invoice_alert(
            "payment_action_required",
            invoice,
            stripe_event_id=event_id,
            attempt_count=invoice.attempt_count,
            last_failure="the customer must authenticate the payment (3-D Secure)",
            details={"hosted_invoice_url": invoice.hosted_invoice_url},
        )
        return plan(**applied, alert=alert)
    return plan(**applied)


def failure_of(invoice: Mapping[str, Any]) -> InvoiceFailure:
    """Why a payment failed, from whatever the invoice carries.

    Webhook invoices rarely expand the payment: an expanded ``payment_intent`` (older
    shape) gives the decline, else ``last_finalization_error``, else a generic line.
    """
    fields = Fields(invoice, f"invoice {invoice.get('id')}")
    intent = invoice.get("payment_intent")
    sources = [
        fields.nested("payment_intent") if isinstance(intent, Mapping) else None,
        fields,
    ]
    for source, key in zip(sources, ("last_payment_error", "last_finalization_error"), strict=True):
        error = None if source is None else source.nested(key)
        if error is None:
            continue
        message = error.optional_string("message")
        code = error.optional_string("decline_code") or error.optional_string("code")
        if message or code:
            return InvoiceFailure(code=code, message=message or str(code))
    attempts = fields.count("attempt_count") or 1
    return InvoiceFailure(code=None, message=f"payment attempt {attempts} failed")


def _usage_alert(event_id: str, obj: Mapping[str, Any]) -> AlertDraft:
    """``billing.alert.triggered``: a Stripe usage alert crossed its threshold."""
    fields = Fields(obj, f"billing.alert_triggered of {event_id}")
    alert = fields.nested("alert") or Fields({}, fields.what, path="alert.")
    customer = obj.get("customer")
    # A customer field that is not a customer id names nobody we know: a usage alert
    # without one is still worth opening.
    customer_id = customer if is_stripe_id(customer, "cus_") else None
    threshold = alert.nested("usage_threshold") or Fields({}, fields.what)
    meter = threshold.raw("meter")
    meter_id = (
        threshold.optional_id("meter", "mtr_", expandable=True) if meter is not None else None
    )
    alert_id = alert.optional_string("id") or "unknown"
    title = alert.optional_string("title") or "usage alert"
    value = fields.optional_integer("value")
    gte = threshold.optional_integer("gte")
    return AlertDraft(
        type="threshold_exceeded",
        dedupe_key=f"threshold_exceeded:stripe:{alert_id}:{customer_id or '-'}",
        customer_id=customer_id,
        stripe_event_id=event_id,
        last_failure=f"{title}: usage {value} reached {gte}",
        details={
            "source": "stripe",
            "stripe_alert": alert_id,
            "title": title,
            "value": value,
            "threshold": gte,
            "meter": meter_id,
        },
    )


@dataclass(frozen=True, slots=True)
class EventResult:
    """What applying one plan (or quarantining one rejected event) did. ``duplicate``:
    already processed, nothing changed; ``quarantined``: its effects rolled back, the
    event kept with ``error``, its reason, in ``billing_quarantined_events`` (row
    ``quarantine_id``) until an operator retries or dismisses it."""

    event_id: str | None
    status: Literal["applied", "skipped", "duplicate", "quarantined"]
    created: datetime | None
    error: str | None = None
    quarantine_id: int | None = None
    alerts_opened: int = 0
    alerts_resolved: int = 0
    dunning_scheduled: int = 0
    dunning_canceled: int = 0
