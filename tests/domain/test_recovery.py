"""``domain.recovery``: each definition of the recovery figures, at its edges."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cloudgreet_billing.domain.reconciliation import Window
from cloudgreet_billing.domain.recovery import (
    BEFORE_ANY_MESSAGE,
    MANUAL_RETRY,
    PAY_LINK_RESENT,
    FailedInvoice,
    Touch,
    exact_pct,
    nearest_rank,
    recovery_report,
)

END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WINDOW = Window(start=END - timedelta(days=30), end=END)
FAILED = END - timedelta(days=10)
HOUR = timedelta(hours=1)

BASE = FailedInvoice(
    id="in_1QpL8HLkdIwHu7ixl4OzzPMv",
    customer_id="cus_RiJ2m0yQbTgC4x",
    currency="usd",
    status="open",
    amount_due=12900,
    amount_paid=0,
    first_failed_at=FAILED,
    settled_at=None,
    paid_at=None,
    exhausted_at=None,
    exempt_since=None,
    decline_code="insufficient_funds",
)


def paid(at: datetime, **changes: object) -> FailedInvoice:
    return replace(BASE, status="paid", amount_paid=12900, settled_at=at, paid_at=at, **changes)


def test_paid_before_the_end_is_recovered_and_after_it_is_still_open():
    assert paid(END - HOUR).outcome(END) == "recovered"
    assert paid(END).outcome(END) == "open"  # the end is exclusive
    assert paid(END, exhausted_at=FAILED + timedelta(days=4)).outcome(END) == "exhausted"


def test_void_and_uncollectible_are_unrecoverable_once_settled_before_the_end():
    voided = replace(BASE, status="void", settled_at=END - HOUR)
    assert voided.outcome(END) == "unrecoverable"
    assert replace(voided, settled_at=END + HOUR).outcome(END) == "open"
    written_off = replace(BASE, status="uncollectible", settled_at=END - HOUR)
    assert written_off.outcome(END) == "unrecoverable"


def test_written_off_then_paid_is_recovered_or_unrecoverable_by_when_it_was_paid():
    # Stripe can still collect an uncollectible invoice: the earliest settlement stays the
    # write-off, and the payment time comes from the invoice itself.
    late = replace(BASE, status="paid", settled_at=FAILED + HOUR, paid_at=END + HOUR)
    assert late.outcome(END) == "unrecoverable"
    assert replace(late, paid_at=END - HOUR).outcome(END) == "recovered"


def test_a_paid_invoice_without_a_known_payment_time_counts_but_has_no_time():
    unknown = replace(BASE, status="paid", amount_paid=12900, settled_at=None, paid_at=None)
    report = recovery_report([unknown], WINDOW)
    total = report.total("usd")
    assert (total.recovered_amount, total.recovered_time_unknown) == (12900, 1)
    assert total.median_time_to_recover is None


def test_exemption_counts_only_when_it_came_before_the_payment():
    before = paid(FAILED + HOUR, exempt_since=FAILED)
    after = paid(FAILED + HOUR, exempt_since=FAILED + 2 * HOUR)
    assert before.exempt(END) and not after.exempt(END)
    unpaid = replace(BASE, exempt_since=END - HOUR)
    assert unpaid.exempt(END)
    voided = replace(BASE, status="void", settled_at=FAILED + HOUR, exempt_since=END - HOUR)
    assert not voided.exempt(END)


def test_last_touch_is_the_latest_before_the_payment_and_a_paying_retry_wins():
    email = Touch(kind="step", at=FAILED, day=0, channel="email")
    sms = Touch(kind="step", at=FAILED + timedelta(days=1), day=1, channel="sms")
    link = Touch(kind="pay_link", at=FAILED + timedelta(days=2))
    retry = Touch(kind="manual_retry", at=FAILED + timedelta(days=1, seconds=2))
    at = FAILED + timedelta(days=1, hours=1)
    assert paid(at).last_touch() == BEFORE_ANY_MESSAGE
    assert paid(at, touches=(email, sms, link)).last_touch() == "day 1 sms"
    assert paid(FAILED + timedelta(days=3), touches=(email, link)).last_touch() == PAY_LINK_RESENT
    # The retry's audit line is written just after Stripe's payment: it made the payment.
    assert paid(FAILED + timedelta(days=1), touches=(email, retry)).last_touch() == MANUAL_RETRY


@pytest.mark.parametrize(
    ("part", "whole", "shown"),
    [
        (25300, 85300, "29.6600"),
        (1, 3, "33.3333"),
        (2, 3, "66.6667"),
        (1, 8, "12.5000"),
        (1, 20000000, "0.0000"),  # 0.000005%: a tenth of the last place, down
        (1, 2000000, "0.0001"),  # 0.00005%: exactly half of the last place, up
        (5, 5, "100.0000"),
    ],
)
def test_rates_are_exact_four_places_half_up(part, whole, shown):
    assert exact_pct(part, whole) == Decimal(shown)
    assert str(exact_pct(part, whole)) == shown


def test_no_failed_amount_has_no_rate():
    assert exact_pct(0, 0) is None


def test_nearest_rank_percentiles_are_times_that_happened():
    times = [timedelta(hours=h) for h in (1, 2, 3, 4)]
    assert nearest_rank(times, 50) == timedelta(hours=2)  # the 2nd of 4, not 2.5h
    assert nearest_rank(times, 90) == timedelta(hours=4)
    assert nearest_rank(times[:1], 90) == timedelta(hours=1)
    assert nearest_rank([], 50) is None
    ten = [timedelta(minutes=m) for m in range(1, 11)]
    assert nearest_rank(ten, 90) == timedelta(minutes=9)


def test_currencies_are_never_added_together_and_failures_outside_the_window_are_left_out():
    eur = replace(BASE, id="in_1QpL8HLkdIwHu7ixl4OzzPMw", currency="eur", amount_due=5000)
    old = replace(BASE, id="in_1QpL8HLkdIwHu7ixl4OzzPMx", first_failed_at=WINDOW.start - HOUR)
    report = recovery_report([BASE, eur, old], WINDOW)
    assert report.currencies == ["eur", "usd"]
    assert report.total("usd").failed_amount == 12900
    assert report.total("eur").failed_amount == 5000


def test_partial_payments_split_the_failed_amount_exactly():
    partial = replace(BASE, amount_due=30000, amount_paid=5000)
    total = recovery_report([partial], WINDOW).total("usd")
    assert (total.failed_amount, total.recovered_amount) == (30000, 0)
    assert (total.partially_paid_amount, total.open_amount) == (5000, 25000)
    assert total.recovery_rate_pct == Decimal("0.0000")


def test_exempt_invoices_get_their_own_row_and_stay_out_of_the_breakdowns():
    exempt = paid(FAILED + HOUR, exempt_since=FAILED - HOUR, id="in_1QpL8HLkdIwHu7ixl4OzzPMy")
    report = recovery_report([BASE, exempt], WINDOW)
    assert report.total("usd").failed_invoices == 1
    assert report.total("usd", "exempt").recovered_amount == 12900
    breakdowns = [row for row in report.rows if row.breakdown != "all"]
    assert [(row.breakdown, row.scope, row.failed_invoices) for row in breakdowns] == [
        ("decline", "dunned", 1)
    ]


def test_an_advice_code_decides_the_class_and_a_missing_code_is_shown_as_none():
    advised = replace(BASE, decline_code="generic_decline", advice_code="do_not_try_again")
    no_code = replace(BASE, id="in_1QpL8HLkdIwHu7ixl4OzzPMz", decline_code=None)
    rows = [row for row in recovery_report([advised, no_code], WINDOW).rows if row.decline_class]
    assert [(row.decline_class, row.decline_code) for row in rows] == [
        ("hard", "generic_decline"),
        ("unknown", "none"),
    ]
