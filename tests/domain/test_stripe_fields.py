"""Parsing Stripe objects checks every field's type, and says which field is wrong."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgreet_billing.domain.events import NotAnEvent, plan_event
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice, parse_subscription
from cloudgreet_billing.errors import BadInput
from tests.sync.conftest import T0, customer, event, full_invoice, subscription

INVOICE_ID = "in_1QpL8HLkdIwHu7ixl4OzzPMv"


def refusal(parse: Any, obj: Any) -> str:
    with pytest.raises(BadInput) as caught:
        parse(obj)
    return caught.value.message


def invoice_with(**fields: Any) -> dict[str, Any]:
    return {**full_invoice(), **fields}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"amount_due": [1]}, "field amount_due: expected an integer, got list"),
        ({"amount_due": True}, "field amount_due: expected an integer, got boolean true"),
        ({"amount_due": "4900"}, "field amount_due: expected an integer, got string '4900'"),
        ({"amount_due": 49.5}, "field amount_due: expected an integer, got number 49.5"),
        (
            {"amount_remaining": 2**63},
            "field amount_remaining: expected an integer from -9223372036854775808 to "
            "9223372036854775807, got integer 9223372036854775808",
        ),
        (
            {"total": 10**40},
            "field total: expected an integer from -9223372036854775808 to "
            "9223372036854775807, got an integer of about 41 digits",
        ),
        ({"attempt_count": "two"}, "field attempt_count: expected an integer, got string 'two'"),
        (
            {"attempt_count": 2**31},
            "field attempt_count: expected an integer from 0 to 2147483647, got integer 2147483648",
        ),
        ({"attempt_count": -1}, "field attempt_count: expected an integer from 0 to 2147483647"),
        ({"attempted": 1}, "field attempted: expected true or false, got integer 1"),
        ({"livemode": "false"}, "field livemode: expected true or false, got string 'false'"),
        ({"currency": "US"}, "field currency: expected a three-letter currency code"),
        ({"currency": 840}, "field currency: expected a three-letter currency code"),
        ({"status": "exploded"}, "field status: expected one of draft, open, paid"),
        ({"customer": "1234"}, "field customer: expected an id starting cus_, got string"),
        ({"customer": {"id": 7}}, "field customer: expected an id starting cus_, got integer 7"),
        ({"customer": None}, "field customer: expected an id starting cus_, got null"),
        ({"number": ["CG-1"]}, "field number: expected a string, got list"),
        ({"hosted_invoice_url": "https://x\x00"}, "field hosted_invoice_url: expected text"),
        ({"created": 1}, "field created: expected a Unix time between 2000 and 2100"),
        ({"created": 10**12}, "field created: expected a Unix time between 2000 and 2100"),
        ({"due_date": "tomorrow"}, "field due_date: expected a Unix time between 2000 and 2100"),
        ({"parent": "sub_1"}, "field parent: expected an object, got string 'sub_1'"),
    ],
)
def test_a_bad_invoice_field_is_named_with_what_came(fields: dict[str, Any], reason: str) -> None:
    message = refusal(parse_invoice, invoice_with(**fields))
    assert message.startswith(f"invoice {INVOICE_ID} ")
    assert reason in message


def test_times_run_from_2000_up_to_but_not_including_2100() -> None:
    for seconds in (946_684_800, 4_102_444_799):  # 2000-01-01, 2099-12-31T23:59:59Z
        assert parse_invoice(invoice_with(created=seconds)).stripe_created.timestamp() == seconds
    for seconds in (946_684_799, 4_102_444_800):
        assert "expected a Unix time between 2000 and 2100" in refusal(
            parse_invoice, invoice_with(due_date=seconds)
        )


def test_an_invoice_id_must_carry_its_prefix() -> None:
    assert refusal(parse_invoice, invoice_with(id="1QpL8HLk")) == (
        "invoice field id: expected an id starting in_, got string '1QpL8HLk'"
    )
    assert "expected an id starting in_" in refusal(parse_invoice, invoice_with(id="in_a b"))
    assert "in_" in refusal(parse_invoice, invoice_with(id="in_" + "x" * 300))


def test_a_long_bad_value_is_quoted_short() -> None:
    message = refusal(parse_invoice, invoice_with(number=["x"], customer="c" * 100_000))
    assert len(message) < 200


def test_a_full_invoice_parses_with_its_nulls() -> None:
    parsed = parse_invoice(full_invoice())
    assert (parsed.amount_due, parsed.currency, parsed.subscription_id, parsed.due_date) == (
        12900,
        "usd",
        "sub_1QpL7xLkdIwHu7ixWq3bN2Zs",
        None,
    )
    # An expanded customer is read through its id; an upper-case currency as Stripe stores it.
    expanded = parse_invoice(invoice_with(customer={"id": "cus_RiJ2m0yQbTgC4x"}, currency="USD"))
    assert (expanded.customer_id, expanded.currency) == ("cus_RiJ2m0yQbTgC4x", "usd")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"id": "si_1"}, "subscription field id: expected an id starting sub_"),
        ({"status": "exploded"}, "field status: expected one of active, canceled"),
        ({"cancel_at_period_end": "no"}, "field cancel_at_period_end: expected true or false"),
        ({"items": {"data": "all"}}, "field items.data: expected a list, got string 'all'"),
        ({"items": {"data": [7]}}, "field items.data[0]: expected an object, got integer 7"),
        (
            {"items": {"data": [{"current_period_end": True}]}},
            "field items.data[0].current_period_end: expected a Unix time",
        ),
        ({"currency": "dollars"}, "field currency: expected a three-letter currency code"),
        ({"pause_collection": "yes"}, "field pause_collection: expected an object"),
    ],
)
def test_a_bad_subscription_field_is_named(fields: dict[str, Any], reason: str) -> None:
    assert reason in refusal(parse_subscription, {**subscription(), **fields})


def test_a_bad_customer_field_is_named() -> None:
    assert "customer cus_1 field email: expected a string, got list" in refusal(
        parse_customer, {**customer(), "email": ["a@example.com"]}
    )
    assert "customer field id: expected an id starting cus_" in refusal(
        parse_customer, {**customer(), "id": "acct_1"}
    )
    assert "field delinquent: expected true or false" in refusal(
        parse_customer, {**customer(), "delinquent": 0}
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "1234"}, "event field id: expected an id starting evt_, got string '1234'"),
        ({"created": "2026-05-28"}, "field created: expected a Unix time between 2000 and 2100"),
        ({"created": True}, "field created: expected a Unix time between 2000 and 2100"),
        ({"type": 7}, "field type: expected a string, got integer 7"),
        ({"livemode": "yes"}, "field livemode: expected true or false"),
        ({"data": []}, "field data: expected an object, got list"),
        ({"data": {"object": "in_1"}}, "field data.object: expected an object, got string"),
    ],
)
def test_a_bad_event_field_is_named(change: dict[str, Any], reason: str) -> None:
    bad = {**event("evt_1QpL8ILkdIwHu7ixa0Bq1Zx9", "invoice.paid", full_invoice(), T0), **change}
    assert reason in refusal(lambda e: plan_event(e, "file"), bad)


@pytest.mark.parametrize("value", [42, "evt_1", [1], {"object": "invoice", "id": "in_1"}, None])
def test_what_is_no_event_at_all_is_told_apart(value: Any) -> None:
    with pytest.raises(NotAnEvent):
        plan_event(value, "file")


def test_nested_failures_and_usage_alerts_are_checked_too() -> None:
    bad_failure = invoice_with(last_finalization_error={"code": ["card_declined"]})
    failed = event("evt_1QpL8ILkdIwHu7ixa0Bq1Zx9", "invoice.payment_failed", bad_failure, T0)
    assert "field last_finalization_error.code: expected a string, got list" in refusal(
        lambda e: plan_event(e, "file"), failed
    )
    triggered = {
        "object": "billing.alert_triggered",
        "customer": "cus_9",
        "value": "1200",
        "alert": {"id": "alrt_1", "title": "Calls over plan", "usage_threshold": {"gte": 1000}},
    }
    alert = event("evt_1QpL8ILkdIwHu7ixa0Bq1Zx8", "billing.alert.triggered", triggered, T0)
    assert "field value: expected an integer, got string '1200'" in refusal(
        lambda e: plan_event(e, "file"), alert
    )


# Any JSON value anywhere in an event: planning answers with a plan or ``BadInput``, never
# with another exception.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [
    ("id",),
    ("type",),
    ("created",),
    ("livemode",),
    ("data",),
    ("data", "object"),
    *(
        ("data", "object", key)
        for key in (
            "id",
            "customer",
            "status",
            "currency",
            "amount_due",
            "amount_remaining",
            "total_excluding_tax",
            "attempt_count",
            "attempted",
            "created",
            "due_date",
            "next_payment_attempt",
            "number",
            "hosted_invoice_url",
            "parent",
            "subscription",
            "last_finalization_error",
            "payment_intent",
        )
    ),
]


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.sampled_from(
        ["invoice.payment_failed", "invoice.paid", "invoice.finalized", "invoice.voided"]
    ),
    path=st.sampled_from(FIELDS),
    value=json_values,
)
def test_planning_never_raises_anything_but_bad_input(
    event_type: str, path: tuple[str, ...], value: Any
) -> None:
    mutated = copy.deepcopy(event("evt_1QpL8ILkdIwHu7ixa0Bq1Zx9", event_type, full_invoice(), T0))
    holder = mutated
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    with contextlib.suppress(BadInput):
        plan_event(mutated, "file")
