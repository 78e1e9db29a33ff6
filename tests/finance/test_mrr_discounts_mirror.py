"""Discounts survive the mirror: backfill expands them, events list only their ids.

Stripe sends a subscription's ``discounts`` as ids in events and webhooks; ``sync
--backfill`` lists subscriptions with them expanded. An event must not erase a coupon the
mirror already knows, or MRR would silently lose the discount (SQLite and PostgreSQL).
"""

from __future__ import annotations

import copy

from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.events import plan_event
from cloudgreet_billing.domain.mirror import parse_subscription
from cloudgreet_billing.domain.mrr import mrr_by_currency
from tests.finance.factories import NOW, coupon, discount, item, price, subscription, unix


def updated_event(event_id: str, obj: dict, created: int) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": "customer.subscription.updated",
        "created": created,
        "livemode": False,
        "data": {"object": obj},
    }


def only_ids(sub: dict) -> dict:
    """The subscription as an event carries it: discounts by id."""
    event_shape = copy.deepcopy(sub)
    event_shape["discounts"] = [d["id"] for d in sub["discounts"]]
    for entry in event_shape["items"]["data"]:
        entry["discounts"] = [d["id"] for d in entry.get("discounts", [])]
    return event_shape


def test_an_event_keeps_the_coupons_backfill_expanded(store):
    quarter_off = discount(coupon(percent_off=25))
    ten_off_item = discount(coupon(amount_off=1_000, currency="usd"))
    backfilled = subscription(
        "sub_1",
        [item(price(10_000), discounts=[ten_off_item])],
        discounts=[quarter_off],
    )
    store.upsert_subscription(parse_subscription(backfilled), NOW, NOW)
    # (10,000 − 1,000) × 0.75
    assert mrr_by_currency(store.recurring_subscriptions(), NOW).by_currency == {"usd": 6_750}

    later = only_ids(backfilled) | {"cancel_at_period_end": True}
    plan = plan_event(updated_event("evt_1", later, unix(NOW) + 60), "webhook")
    [result] = store.apply_event_plans([plan], planner=TimelinePlanner(), now=NOW)
    assert result.status == "applied"

    mirrored = store.get_subscription("sub_1")
    assert mirrored.cancel_at_period_end, "the event's own change was applied"
    assert mirrored.raw["discounts"] == [quarter_off]
    assert mirrored.raw["items"]["data"][0]["discounts"] == [ten_off_item]
    summary = mrr_by_currency(store.recurring_subscriptions(), NOW)
    assert summary.by_currency == {"usd": 6_750}
    assert summary.notes == []


def test_a_discount_the_mirror_never_saw_is_reported_with_the_fix(store):
    backfilled = subscription("sub_1", [item(price(10_000))], discounts=[])
    store.upsert_subscription(parse_subscription(backfilled), NOW, NOW)
    later = backfilled | {"discounts": ["di_new"]}
    plan = plan_event(updated_event("evt_1", later, unix(NOW) + 60), "webhook")
    store.apply_event_plans([plan], planner=TimelinePlanner(), now=NOW)

    summary = mrr_by_currency(store.recurring_subscriptions(), NOW)
    assert summary.by_currency == {"usd": 10_000}
    assert summary.notes == [
        "sub_1: 1 discount not expanded in the mirror; run sync --backfill to read them"
    ]
