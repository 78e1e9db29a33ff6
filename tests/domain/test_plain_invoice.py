"""The quick reading of an invoice gives what the field-by-field reading gives, on any
invoice: the same mirrored invoice, or (by handing it over) the same refusal."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgreet_billing.domain.mirror import _checked_invoice, _plain_invoice, parse_invoice
from cloudgreet_billing.errors import BadInput
from tests.sync.conftest import full_invoice

# Values of every JSON type, plus the edges the checks draw: bigint and integer limits,
# 2000 and 2100 as Unix times, ids with and without their prefix, blank and NUL text.
EDGES = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        1,
        2**31 - 1,
        2**31,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        946_684_799,
        946_684_800,
        4_102_444_799,
        4_102_444_800,
        1.0,
        "",
        " ",
        "a\x00b",
        "usd",
        "USD",
        "us",
        "open",
        "paid",
        "drafted",
        "in_1QpL8HLkdIwHu7ixl4OzzPMv",
        "cus_RiJ2m0yQbTgC4x",
        "sub_1QpL7xLkdIwHu7ixWq3bN2Zs",
        "sub_",
        "subscription",
        "in_" + "a" * 253,
        "in_" + "a" * 252,
        [],
        {},
        {"id": "cus_RiJ2m0yQbTgC4x"},
        {"subscription": "sub_1QpL7xLkdIwHu7ixWq3bN2Zs"},
        {"subscription_details": None},
        {"subscription_details": {"subscription": "sub_9"}},
        {"subscription_details": {"subscription": "bad"}},
        {"subscription_details": {"subscription": ""}},
        {"subscription_details": "x"},
        {"finalized_at": 1_764_000_000},
        {"finalized_at": "1764000000"},
    ]
)
VALUES = st.one_of(
    EDGES,
    st.integers(min_value=-(2**65), max_value=2**65),
    st.text(max_size=6),
    st.floats(allow_nan=False),
)
KEYS = [
    "id",
    "customer",
    "subscription",
    "parent",
    "number",
    "status",
    "currency",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "total",
    "total_excluding_tax",
    "attempt_count",
    "attempted",
    "next_payment_attempt",
    "due_date",
    "hosted_invoice_url",
    "livemode",
    "created",
    "customer_email",
    "customer_phone",
    "customer_name",
    "status_transitions",
]


def reading(parse: Any, obj: dict[str, Any]) -> Any:
    """What ``parse`` gives: every field of the invoice (``raw`` included), or the refusal."""
    try:
        invoice = parse(obj)
    except BadInput as exc:
        return ("refused", exc.message)
    return {f.name: getattr(invoice, f.name) for f in dataclasses.fields(invoice)}


# Per field, the values its checks draw a line between (beside any value at all).
NEAR = {
    "id": ["in_1QpL8HLkdIwHu7ixl4OzzPMv", "in_" + "a" * 252, "in_" + "a" * 253, "in_", "cus_1"],
    "customer": ["cus_RiJ2m0yQbTgC4x", "cus_", "in_1", {"id": "cus_RiJ2m0yQbTgC4x"}],
    "subscription": ["sub_1QpL7xLkdIwHu7ixWq3bN2Zs", "sub_", "subscription", {"id": "sub_1"}],
    "status": ["open", "paid", "draft", "void", "uncollectible", "drafted", "OPEN"],
    "currency": ["usd", "USD", "Eur", "us", "usdd", "ü12"],
    "attempt_count": [0, 1, 2**31 - 1, 2**31, -1],
    "amount_due": [0, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1],
    "total_excluding_tax": [0, 2**63 - 1, 2**63, -(2**63) - 1],
    "created": [946_684_799, 946_684_800, 4_102_444_799, 4_102_444_800],
    "due_date": [946_684_799, 946_684_800, 4_102_444_799, 4_102_444_800],
    "customer_email": ["", " ", "\t", "a@b.co", "a\x00b"],
    "customer_name": ["", " ", "Ada", "a\x00b"],
    "number": ["", "A1-0001", "a\x00b"],
    "parent": [
        None,
        "subscription_details",
        {"subscription_details": None},
        {"subscription_details": "x"},
        {"subscription_details": {"subscription": ""}},
        {"subscription_details": {"subscription": None}},
        {"subscription_details": {"subscription": "sub_9"}},
        {"subscription_details": {"subscription": "bad"}},
    ],
    "status_transitions": [None, {}, {"finalized_at": None}, {"finalized_at": 946_684_799}, []],
}


@settings(max_examples=800, deadline=None)
@given(data=st.data())
def test_the_quick_reading_agrees_with_the_field_by_field_one(data: st.DataObject) -> None:
    # Mostly one or two changes, so that many invoices stay plain and are read quickly.
    obj = full_invoice()
    for key in data.draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)):
        near = NEAR.get(key)
        if near is not None and data.draw(st.booleans()):
            obj[key] = data.draw(st.sampled_from(near), label=key)
        elif data.draw(st.integers(0, 9)) == 0:
            obj.pop(key, None)
        else:
            obj[key] = data.draw(VALUES, label=key)
    quick = _plain_invoice(obj)
    checked = reading(_checked_invoice, obj)
    if quick is not None:
        assert reading(lambda _: quick, obj) == checked
    assert reading(parse_invoice, obj) == checked


def test_stripe_s_invoices_take_the_quick_reading() -> None:
    # The shapes a sync meets most: current API (parent.subscription_details), the older
    # top-level subscription, drafts with nulls, and a paid invoice.
    current = full_invoice()
    older = {**full_invoice(), "parent": None, "subscription": "sub_1QpL7xLkdIwHu7ixWq3bN2Zs"}
    draft = {
        **full_invoice(status="draft"),
        "number": None,
        "hosted_invoice_url": None,
        "status_transitions": {"finalized_at": None, "paid_at": None},
    }
    paid = full_invoice(status="paid")
    # A parent without a subscription id leaves the top-level one to count.
    mixed = {
        **full_invoice(),
        "parent": {"subscription_details": {"subscription": None}},
        "subscription": "sub_1QpL7xLkdIwHu7ixWq3bN2Zs",
    }
    for obj in (current, older, draft, paid, mixed):
        assert _plain_invoice(obj) is not None
        assert reading(parse_invoice, obj) == reading(_checked_invoice, obj)
    assert parse_invoice(mixed).subscription_id == "sub_1QpL7xLkdIwHu7ixWq3bN2Zs"


@pytest.mark.parametrize(
    "changes",
    [
        {"customer": {"id": "cus_RiJ2m0yQbTgC4x", "object": "customer"}},
        {"amount_due": None},
        {"attempt_count": True},
        {"parent": {"subscription_details": {"subscription": {"id": "sub_1"}}}},
    ],
)
def test_other_shapes_are_read_field_by_field(changes: dict[str, Any]) -> None:
    obj = {**full_invoice(), **changes}
    assert _plain_invoice(obj) is None
    assert reading(parse_invoice, obj) == reading(_checked_invoice, obj)
