"""Stripe invoices, subscriptions and customers as the local mirror keeps them.

Parsers take the plain JSON shape (an API or webhook object, or ``StripeObject.to_dict()``)
and tolerate both the current API shape and the older one (before the 2025 versions an
invoice's subscription id sat at the top level; now it lives under
``parent.subscription_details``). Every field is read through ``stripe_fields.Fields``, so
a field of the wrong type is ``BadInput`` naming it, never an exception of Python's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cloudgreet_billing.domain.failed_payment import default_payment_method
from cloudgreet_billing.domain.statuses import (
    INVOICE_STATUSES,
    SUBSCRIPTION_STATUSES,
)
from cloudgreet_billing.domain.stripe_fields import (
    INTEGER_MAX,
    Fields,
    is_bigint,
    is_currency_code,
    is_stripe_id,
    is_unix_time,
)
from cloudgreet_billing.domain.timefmt import utc_from_unix
from cloudgreet_billing.errors import BadInput


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
    #: The last failure's decline (``domain.merge``: the failure of the highest attempt).
    last_decline_code: str | None = None
    last_advice_code: str | None = None
    last_failure_payment_method: str | None = None

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
    #: ``invoice_settings.default_payment_method`` (else ``default_source``): the card
    #: the customer's next invoice charge uses.
    default_payment_method: str | None = None


def _contact(fields: Fields, key: str) -> str | None:
    """An optional contact field (``customer_email``, …); an empty string is no value."""
    return _filled(fields.optional_string(key))


def _filled(value: str | None) -> str | None:
    """A contact as the mirror keeps it: an empty or blank string is no value."""
    return value if value and value.strip() else None


def _finalized_at(fields: Fields) -> datetime | None:
    transitions = fields.nested("status_transitions")
    return None if transitions is None else transitions.optional_time("finalized_at")


def subscription_id_of_invoice(invoice: Mapping[str, Any]) -> str | None:
    """The invoice's subscription: under ``parent.subscription_details`` (current API
    versions), else at the top level (older versions)."""
    return _subscription_id(Fields(invoice, f"invoice {invoice.get('id')}"))


def _subscription_id(fields: Fields) -> str | None:
    parent = fields.nested("parent")
    details = None if parent is None else parent.nested("subscription_details")
    if details is not None and details.raw("subscription"):
        return _reference(details, "subscription", "sub_")
    return _reference(fields, "subscription", "sub_")


def _reference(fields: Fields, key: str, prefix: str) -> str | None:
    """A link to another object that billing can do without: one that is not an id of
    its kind is dropped, never stored, and never makes the invoice unreadable, since
    that would keep a failed payment from its alert and dunning. stripe-mock's invoice
    fixture, for one, links the subscription as the bare word ``"subscription"``."""
    try:
        return fields.optional_id(key, prefix, expandable=True)
    except BadInput:
        return None


def parse_invoice(obj: Mapping[str, Any]) -> MirroredInvoice:
    """An invoice object as the mirror keeps it; ``BadInput`` names a field of the wrong
    type or out of range."""
    plain = _plain_invoice(obj)
    return plain if plain is not None else _checked_invoice(obj)


def _plain_invoice(obj: Mapping[str, Any]) -> MirroredInvoice | None:
    """``_checked_invoice(obj)`` for an invoice whose every field is plain: of its type,
    in its range, or null where null is allowed, as Stripe sends them. None when any is
    not (an expanded customer, a missing amount, a wrong type): ``_checked_invoice`` then
    reads that one, and gives the default or names the field.

    A sync reads thousands of invoices, and reading field by field through ``Fields``
    was most of planning's time; this reads each with one lookup and one check.
    ``tests/domain/test_plain_invoice.py`` checks both give the same on any invoice.
    """
    if type(obj) is not dict:
        return None
    get = obj.get
    invoice_id, customer_id = get("id"), get("customer")
    if not (is_stripe_id(invoice_id, "in_") and is_stripe_id(customer_id, "cus_")):
        return None
    amount_due, amount_paid = get("amount_due"), get("amount_paid")
    amount_remaining, total = get("amount_remaining"), get("total")
    excluding_tax, attempt_count = get("total_excluding_tax"), get("attempt_count")
    if not (
        is_bigint(amount_due)
        and is_bigint(amount_paid)
        and is_bigint(amount_remaining)
        and is_bigint(total)
        and (excluding_tax is None or is_bigint(excluding_tax))
    ):
        return None
    if type(attempt_count) is not int or not 0 <= attempt_count <= INTEGER_MAX:
        return None
    status, currency = get("status"), get("currency")
    if status is None:
        status = "draft"
    elif type(status) is not str or status not in INVOICE_STATUSES:
        return None
    if not is_currency_code(currency):
        return None
    attempted, livemode = get("attempted"), get("livemode")
    if type(attempted) is not bool or type(livemode) is not bool:
        return None
    number, url = get("number"), get("hosted_invoice_url")
    email, phone, name = get("customer_email"), get("customer_phone"), get("customer_name")
    for text in (number, url, email, phone, name):
        if text is not None and (type(text) is not str or "\x00" in text):
            return None
    created, next_attempt, due_date = get("created"), get("next_payment_attempt"), get("due_date")
    transitions = get("status_transitions")
    if transitions is None:
        finalized_at = None
    elif type(transitions) is dict:
        finalized_at = transitions.get("finalized_at")
    else:
        return None
    if not is_unix_time(created):
        return None
    for moment in (next_attempt, due_date, finalized_at):
        if moment is not None and not is_unix_time(moment):
            return None
    subscription_id = _plain_subscription_id(get)
    if subscription_id is False:
        return None
    return MirroredInvoice(
        id=invoice_id,
        customer_id=customer_id,
        subscription_id=subscription_id,
        number=number,
        status=status,
        currency=currency.lower(),
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=amount_remaining,
        total=total,
        total_excluding_tax=excluding_tax,
        attempt_count=attempt_count,
        attempted=attempted,
        next_payment_attempt=None if next_attempt is None else utc_from_unix(next_attempt),
        due_date=None if due_date is None else utc_from_unix(due_date),
        hosted_invoice_url=url,
        livemode=livemode,
        stripe_created=utc_from_unix(created),
        raw=obj,
        customer_email=_filled(email),
        customer_phone=_filled(phone),
        customer_name=_filled(name),
        finalized_at=None if finalized_at is None else utc_from_unix(finalized_at),
    )


def _plain_subscription_id(get: Callable[[str], Any]) -> str | Literal[False] | None:
    """``_subscription_id`` for the plain shapes: the id under ``parent.
    subscription_details`` (else at the top level), or null; False for any other shape."""
    parent = get("parent")
    if parent is None:
        linked = get("subscription")
    elif type(parent) is dict:
        details = parent.get("subscription_details")
        if details is None:
            linked = get("subscription")
        elif type(details) is dict:
            linked = details.get("subscription") or get("subscription")
        else:
            return False
    else:
        return False
    if linked is None:
        return None
    return linked if is_stripe_id(linked, "sub_") else False


def _checked_invoice(obj: Mapping[str, Any]) -> MirroredInvoice:
    """``parse_invoice``, field by field through ``Fields``: the reference reading."""
    fields = Fields(obj, "invoice")
    invoice_id = fields.id("id", "in_")
    fields.what = f"invoice {invoice_id}"
    return MirroredInvoice(
        id=invoice_id,
        customer_id=fields.id("customer", "cus_", expandable=True),
        subscription_id=_subscription_id(fields),
        number=fields.optional_string("number"),
        status=fields.choice("status", INVOICE_STATUSES, default="draft"),
        currency=fields.currency("currency"),
        amount_due=fields.integer("amount_due"),
        amount_paid=fields.integer("amount_paid"),
        amount_remaining=fields.integer("amount_remaining"),
        total=fields.integer("total"),
        total_excluding_tax=fields.optional_integer("total_excluding_tax"),
        attempt_count=fields.count("attempt_count"),
        attempted=fields.boolean("attempted"),
        next_payment_attempt=fields.optional_time("next_payment_attempt"),
        due_date=fields.optional_time("due_date"),
        hosted_invoice_url=fields.optional_string("hosted_invoice_url"),
        livemode=fields.boolean("livemode"),
        stripe_created=fields.time("created"),
        raw=obj,
        customer_email=_contact(fields, "customer_email"),
        customer_phone=_contact(fields, "customer_phone"),
        customer_name=_contact(fields, "customer_name"),
        finalized_at=_finalized_at(fields),
    )


def _first_item(fields: Fields) -> Fields | None:
    """A subscription's first item (since the 2025 API versions the billing period lives on
    each item)."""
    items = fields.nested("items")
    listed = None if items is None else items.raw("data")
    if listed is None or listed == []:
        return None
    if not isinstance(listed, list):
        raise fields.bad("items.data", "a list", listed)
    first = listed[0]
    if not isinstance(first, Mapping):
        raise fields.bad("items.data[0]", "an object", first)
    return Fields(first, fields.what, path="items.data[0].")


def parse_subscription(obj: Mapping[str, Any]) -> MirroredSubscription:
    """A subscription object as the mirror keeps it; ``BadInput`` names a bad field."""
    fields = Fields(obj, "subscription")
    subscription_id = fields.id("id", "sub_")
    fields.what = f"subscription {subscription_id}"
    first_item = _first_item(fields)
    period_end = fields.optional_time("current_period_end")
    if period_end is None and first_item is not None:
        period_end = first_item.optional_time("current_period_end")
    currency = fields.optional_currency("currency")
    price = None if first_item is None else first_item.nested("price")
    if currency is None and price is not None:
        currency = price.optional_currency("currency")
    fields.nested("pause_collection")  # an object or null
    return MirroredSubscription(
        id=subscription_id,
        customer_id=fields.id("customer", "cus_", expandable=True),
        status=fields.choice("status", SUBSCRIPTION_STATUSES),
        currency=currency or "usd",
        cancel_at_period_end=fields.boolean("cancel_at_period_end"),
        current_period_end=period_end,
        collection_paused=obj.get("pause_collection") is not None,
        livemode=fields.boolean("livemode"),
        stripe_created=fields.optional_time("created"),
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
    """A customer object (or a deleted customer's stub) as the mirror keeps it."""
    fields = Fields(obj, "customer")
    customer_id = fields.id("id", "cus_")
    fields.what = f"customer {customer_id}"
    return MirroredCustomer(
        id=customer_id,
        email=fields.optional_string("email"),
        name=fields.optional_string("name"),
        phone=fields.optional_string("phone"),
        currency=fields.optional_currency("currency"),
        delinquent=fields.boolean("delinquent"),
        deleted=fields.boolean("deleted"),
        livemode=fields.boolean("livemode"),
        stripe_created=fields.optional_time("created"),
        raw=obj,
        default_payment_method=default_payment_method(obj),
    )
