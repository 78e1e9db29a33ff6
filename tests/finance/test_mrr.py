"""MRR rules one by one; each expected figure is worked out in its comment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudgreet_billing.domain.mirror import parse_subscription
from cloudgreet_billing.domain.mrr import mrr_by_currency, round_half_up, subscription_mrr
from tests.finance.factories import NOW, coupon, discount, item, price, subscription


def mrr(*subs):
    return mrr_by_currency([parse_subscription(s) for s in subs], NOW).by_currency


def test_monthly_price_counts_as_is():
    assert mrr(subscription("sub_1", [item(price(2_000))])) == {"usd": 2_000}


def test_annual_is_divided_by_twelve():
    # 120,000 / 12 = 10,000
    assert mrr(subscription("sub_1", [item(price(120_000, interval="year"))])) == {"usd": 10_000}


def test_quarterly_is_divided_by_three():
    # every 3 months: 30,000 / 3 = 10,000
    sub = subscription("sub_1", [item(price(30_000, interval="month", interval_count=3))])
    assert mrr(sub) == {"usd": 10_000}


def test_weekly_is_times_52_over_12():
    # 1,000 × 52 / 12 = 4,333.33… → 4,333
    assert mrr(subscription("sub_1", [item(price(1_000, interval="week"))])) == {"usd": 4_333}


def test_daily_is_times_365_over_12():
    # 100 × 365 / 12 = 3,041.66… → 3,042
    assert mrr(subscription("sub_1", [item(price(100, interval="day"))])) == {"usd": 3_042}


def test_quantity_multiplies_the_unit_amount():
    # 1,500 × 4 seats = 6,000
    assert mrr(subscription("sub_1", [item(price(1_500), quantity=4)])) == {"usd": 6_000}


def test_missing_quantity_means_one():
    assert mrr(subscription("sub_1", [item(price(1_500), quantity=None)])) == {"usd": 1_500}


@pytest.mark.parametrize(
    "status", ["trialing", "incomplete", "incomplete_expired", "unpaid", "canceled"]
)
def test_statuses_that_do_not_count(status):
    assert mrr(subscription("sub_1", [item(price(2_000))], status=status)) == {}


def test_past_due_still_counts():
    assert mrr(subscription("sub_1", [item(price(2_000))], status="past_due")) == {"usd": 2_000}


def test_paused_collection_does_not_count():
    sub = subscription(
        "sub_1", [item(price(2_000))], pause_collection={"behavior": "void", "resumes_at": None}
    )
    assert mrr(sub) == {}


def test_cancel_at_period_end_counts_until_the_end():
    ending_later = subscription(
        "sub_1",
        [item(price(2_000))],
        cancel_at_period_end=True,
        current_period_end=datetime(2026, 12, 1, tzinfo=UTC),
    )
    already_ended = subscription(
        "sub_2",
        [item(price(5_000))],
        cancel_at_period_end=True,
        current_period_end=datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert mrr(ending_later, already_ended) == {"usd": 2_000}


def test_forever_percent_coupon_reduces_mrr():
    # 10,000 × (1 − 25.5%) = 7,450
    sub = subscription(
        "sub_1", [item(price(10_000))], discounts=[discount(coupon(percent_off=25.5))]
    )
    assert mrr(sub) == {"usd": 7_450}


def test_amount_off_coupon_in_the_same_currency_reduces_mrr():
    # annual 120,000 − 12,000 off per invoice = 108,000 / 12 = 9,000
    sub = subscription(
        "sub_1",
        [item(price(120_000, interval="year"))],
        discounts=[discount(coupon(amount_off=12_000, currency="usd"))],
    )
    assert mrr(sub) == {"usd": 9_000}


def test_amount_off_coupon_in_another_currency_is_not_applied():
    sub = subscription(
        "sub_1",
        [item(price(10_000))],
        discounts=[discount(coupon(amount_off=1_000, currency="eur"))],
    )
    summary = mrr_by_currency([parse_subscription(sub)], NOW)
    assert summary.by_currency == {"usd": 10_000}
    assert any("not applied" in note for note in summary.notes)


def test_once_coupon_does_not_reduce_mrr():
    sub = subscription(
        "sub_1",
        [item(price(10_000))],
        discounts=[discount(coupon(duration="once", percent_off=50))],
    )
    assert mrr(sub) == {"usd": 10_000}


def test_repeating_coupon_counts_only_while_in_effect():
    running = discount(
        coupon(duration="repeating", percent_off=50, duration_in_months=3),
        end=datetime(2027, 1, 1, tzinfo=UTC),
    )
    expired = discount(
        coupon(duration="repeating", percent_off=50, duration_in_months=3),
        end=datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert mrr(subscription("sub_1", [item(price(10_000))], discounts=[running])) == {"usd": 5_000}
    assert mrr(subscription("sub_2", [item(price(10_000))], discounts=[expired])) == {"usd": 10_000}


def test_legacy_discount_shape_with_coupon_at_the_top():
    legacy = {"id": "di_old", "coupon": coupon(percent_off=10), "start": 0, "end": None}
    sub = subscription("sub_1", [item(price(10_000))], discount=legacy)
    assert mrr(sub) == {"usd": 9_000}


def test_metered_items_are_booking_fees_not_mrr():
    sub = subscription(
        "sub_1",
        [item(price(2_000)), item(price(25, usage_type="metered"), quantity=None)],
    )
    assert mrr(sub) == {"usd": 2_000}


def test_tax_inclusive_price_has_its_inclusive_rate_removed():
    # 12,000 including 20% VAT → 12,000 / 1.2 = 10,000
    vat = {"id": "txr_1", "percentage": 20.0, "inclusive": True}
    sub = subscription("sub_1", [item(price(12_000, tax_behavior="inclusive"), tax_rates=[vat])])
    assert mrr(sub) == {"usd": 10_000}


def test_multi_currency_totals_are_kept_apart():
    assert mrr(
        subscription("sub_1", [item(price(2_000))]),
        subscription("sub_2", [item(price(3_000))], customer="cus_B"),
        subscription(
            "sub_3", [item(price(1_500, currency="eur"))], currency="eur", customer="cus_C"
        ),
        subscription(
            "sub_4", [item(price(50_000, currency="jpy"))], currency="jpy", customer="cus_D"
        ),
    ) == {"eur": 1_500, "jpy": 50_000, "usd": 5_000}


def test_only_the_final_figure_is_rounded():
    # Three weekly subscriptions of 100: each 433.33…; rounding each would give 1,299,
    # rounding the sum gives 1,300.
    subs = [subscription(f"sub_{n}", [item(price(100, interval="week"))]) for n in range(3)]
    assert mrr(*subs) == {"usd": 1_300}


def test_half_rounds_up():
    # 1 × 6 per year → 0.5 a month → 1
    assert mrr(subscription("sub_1", [item(price(6, interval="year"))])) == {"usd": 1}
    from fractions import Fraction

    assert round_half_up(Fraction(5, 2)) == 3
    assert round_half_up(Fraction(-5, 2)) == -3


def test_discount_ids_without_objects_are_reported():
    sub = subscription("sub_1", [item(price(2_000))], discounts=["di_only_an_id"])
    contribution = subscription_mrr(parse_subscription(sub), NOW)
    assert contribution.amount == 2_000
    assert any("not expanded" in note for note in contribution.notes)


def test_a_discount_sent_both_as_an_id_and_expanded_counts_once():
    # Older API versions send ``discounts`` as ids beside one expanded ``discount``.
    legacy = {"id": "di_old", "coupon": coupon(percent_off=10), "start": 0, "end": None}
    sub = subscription("sub_1", [item(price(10_000))], discounts=["di_old"], discount=legacy)
    contribution = subscription_mrr(parse_subscription(sub), NOW)
    assert contribution.amount == 9_000
    assert contribution.notes == ()
