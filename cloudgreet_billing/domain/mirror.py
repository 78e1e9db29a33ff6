"""Stripe invoices, subscriptions and customers as the local mirror keeps them.

Parsers take the plain JSON shape (an API or webhook object, or ``StripeObject.to_dict()``)
and tolerate both the current API shape and the older one (before the 2025 versions an
invoice's subscription id sat at the top level; now it lives under
``parent.subscription_details``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from cloudgreet_billing.domain.statuses import INVOICE_STATUSES, SETTLED_INVOICE_STATUSES
from cloudgreet_billing.domain.timefmt import from_unix, utc_from_unix
from cloudgreet_billing.errors import BadInput

#: Settled invoices: nothing processed later may reopen them.
FINAL_INVOICE_STATUSES: Final = frozenset(SETTLED_INVOICE_STATUSES)


@dataclass(frozen=True, slots=True)
class MirroredInvoice:
    id: str
    customer_id: str
    subscription_id: str | None
    number: str | None
    status: str
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    total: int
    total_excluding_tax: int | None
    attempt_count: int
    attempted: bool
    next_payment_attempt: datetime | None
    due_date: datetime | None
    hosted_invoice_url: str | None
    livemode: bool
    stripe_created: datetime
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    first_failed_at: datetime | None = None
    last_failure_code: str | None = None
    last_failure_message: str | None = None
    #: Stripe copies the customer's contact details onto the invoice when it is finalized
    #: and never updates them after (API reference, invoice ``customer_email``).
    customer_email: str | None = None
    customer_phone: str | None = None
    customer_name: str | None = None
    finalized_at: datetime | None = None

    @property
    def amount_owed(self) -> int:
        """What the customer still owes: ``amount_remaining``, or ``amount_due`` before any
        payment was applied."""
        return self.amount_remaining or self.amount_due

    @property
    def invoiced_amount(self) -> int:
        """What reconciliation counts: ``total_excluding_tax``, or ``total`` without it."""
        return self.total if self.total_excluding_tax is None else self.total_excluding_tax


@dataclass(frozen=True, slots=True)
class MirroredSubscription:
    id: str
    customer_id: str
    status: str
    currency: str
    cancel_at_period_end: bool
    current_period_end: datetime | None
    collection_paused: bool
    livemode: bool
    stripe_created: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MirroredCustomer:
    id: str
    email: str | None
    name: str | None
    phone: str | None
    currency: str | None
    delinquent: bool
    deleted: bool
    livemode: bool
    stripe_created: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


def invoice_transition_allowed(current: str, incoming: str) -> bool:
    """Whether a mirrored invoice in ``current`` may take the ``incoming`` status.

    Paid and void invoices never change; an uncollectible one may still be paid or voided.
    """
    if current not in FINAL_INVOICE_STATUSES or incoming == current:
        return True
    return current == "uncollectible" and incoming in ("paid", "void")


def _id_of(value: Any) -> str | None:
    """An id field that may be expanded into an object."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return None


def _require(obj: Mapping[str, Any], key: str, kind: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise BadInput(f"{kind} object has no {key!r}", hint="is this a Stripe object?")
    return value


def _int(obj: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = obj.get(key)
    return default if value is None else int(value)


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    """An optional text field; an empty string is no value."""
    value = obj.get(key)
    return value if isinstance(value, str) and value.strip() else None


def finalized_at_of_invoice(invoice: Mapping[str, Any]) -> datetime | None:
    transitions = invoice.get("status_transitions")
    if not isinstance(transitions, Mapping):
        return None
    return from_unix(transitions.get("finalized_at"))


def subscription_id_of_invoice(invoice: Mapping[str, Any]) -> str | None:
    parent = invoice.get("parent")
    if isinstance(parent, Mapping):
        details = parent.get("subscription_details")
        if isinstance(details, Mapping) and details.get("subscription"):
            return _id_of(details.get("subscription"))
    return _id_of(invoice.get("subscription"))


def parse_invoice(obj: Mapping[str, Any]) -> MirroredInvoice:
    invoice_id = _require(obj, "id", "invoice")
    if not str(invoice_id).startswith("in_"):
        raise BadInput(f"{invoice_id!r} is not an invoice id (in_…)")
    status = obj.get("status") or "draft"
    if status not in INVOICE_STATUSES:
        raise BadInput(f"invoice {invoice_id} has unknown status {status!r}")
    customer_id = _id_of(obj.get("customer"))
    if not customer_id:
        raise BadInput(f"invoice {invoice_id} has no customer")
    total_excluding_tax = obj.get("total_excluding_tax")
    return MirroredInvoice(
        id=invoice_id,
        customer_id=customer_id,
        subscription_id=subscription_id_of_invoice(obj),
        number=obj.get("number"),
        status=status,
        currency=str(_require(obj, "currency", "invoice")).lower(),
        amount_due=_int(obj, "amount_due"),
        amount_paid=_int(obj, "amount_paid"),
        amount_remaining=_int(obj, "amount_remaining"),
        total=_int(obj, "total"),
        total_excluding_tax=None if total_excluding_tax is None else int(total_excluding_tax),
        attempt_count=_int(obj, "attempt_count"),
        attempted=bool(obj.get("attempted", False)),
        next_payment_attempt=from_unix(obj.get("next_payment_attempt")),
        due_date=from_unix(obj.get("due_date")),
        hosted_invoice_url=obj.get("hosted_invoice_url"),
        livemode=bool(obj.get("livemode", False)),
        stripe_created=utc_from_unix(_require(obj, "created", "invoice")),
        raw=obj,
        customer_email=_text(obj, "customer_email"),
        customer_phone=_text(obj, "customer_phone"),
        customer_name=_text(obj, "customer_name"),
        finalized_at=finalized_at_of_invoice(obj),
    )


def parse_subscription(obj: Mapping[str, Any]) -> MirroredSubscription:
    subscription_id = _require(obj, "id", "subscription")
    items = obj.get("items")
    first_item: Mapping[str, Any] = {}
    if isinstance(items, Mapping) and items.get("data"):
        first_item = items["data"][0]
    # Since the 2025 API versions the billing period lives on each item.
    period_end = obj.get("current_period_end") or first_item.get("current_period_end")
    currency = obj.get("currency")
    if not currency and first_item:
        currency = (first_item.get("price") or {}).get("currency")
    customer_id = _id_of(obj.get("customer"))
    if not customer_id:
        raise BadInput(f"subscription {subscription_id} has no customer")
    return MirroredSubscription(
        id=subscription_id,
        customer_id=customer_id,
        status=str(_require(obj, "status", "subscription")),
        currency=str(currency or "usd").lower(),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end", False)),
        current_period_end=from_unix(period_end),
        collection_paused=obj.get("pause_collection") is not None,
        livemode=bool(obj.get("livemode", False)),
        stripe_created=from_unix(obj.get("created")),
        raw=obj,
    )


def unexpanded_discount_ids(subscription: Mapping[str, Any]) -> set[str]:
    """Discounts the subscription or its items list only by id, as events send them."""
    ids: set[str] = set()
    for holder in _discount_holders(subscription):
        ids.update(d for d in holder.get("discounts") or [] if isinstance(d, str))
    return ids


def with_known_discounts(
    subscription: Mapping[str, Any], previous: Mapping[str, Any]
) -> dict[str, Any]:
    """``subscription`` with each discount id it lists replaced by the expanded discount
    the mirror already had under that id (``sync --backfill`` expands them; events send
    only ids, so an event must not erase what MRR needs to know about a coupon)."""
    known = {
        str(d["id"]): d
        for holder in _discount_holders(previous)
        for d in holder.get("discounts") or []
        if isinstance(d, Mapping) and d.get("id")
    }

    def expanded(holder: Mapping[str, Any]) -> dict[str, Any]:
        listed = holder.get("discounts")
        if not isinstance(listed, list):
            return dict(holder)
        return {
            **holder,
            "discounts": [known.get(d, d) if isinstance(d, str) else d for d in listed],
        }

    merged = expanded(subscription)
    items = subscription.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("data"), list):
        merged["items"] = {
            **items,
            "data": [expanded(i) if isinstance(i, Mapping) else i for i in items["data"]],
        }
    return merged


def _discount_holders(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The subscription and its items: what can carry ``discounts``."""
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    return [subscription, *(i for i in data or [] if isinstance(i, Mapping))]


def parse_customer(obj: Mapping[str, Any]) -> MirroredCustomer:
    customer_id = _require(obj, "id", "customer")
    currency = obj.get("currency")
    return MirroredCustomer(
        id=customer_id,
        email=obj.get("email"),
        name=obj.get("name"),
        phone=obj.get("phone"),
        currency=str(currency).lower() if currency else None,
        delinquent=bool(obj.get("delinquent", False)),
        deleted=bool(obj.get("deleted", False)),
        livemode=bool(obj.get("livemode", False)),
        stripe_created=from_unix(obj.get("created")),
        raw=obj,
    )
