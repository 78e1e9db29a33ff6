"""``domain.recovery``: each definition of the recovery figures, at its edges."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


_MOMENTS = st.integers(min_value=-40 * 24, max_value=10 * 24).map(lambda h: END + h * HOUR)


@st.composite
def failed_invoices(draw: st.DrawFn) -> FailedInvoice:
    """Any invoice a mirror could hold, consistent or not in its times."""
    amount_due = draw(st.integers(min_value=0, max_value=10**9))
    status = draw(st.sampled_from(["open", "paid", "void", "uncollectible"]))
    settled = draw(st.none() | _MOMENTS) if status != "open" else None
    touches = draw(
        st.lists(
            st.builds(
                Touch,
                kind=st.sampled_from(["step", "pay_link", "manual_retry"]),
                at=_MOMENTS,
                day=st.sampled_from([0, 1, 3]),
                channel=st.sampled_from(["email", "sms"]),
            ),
            max_size=4,
        )
    )
    return FailedInvoice(
        id="in_1QpL8HLkdIwHu7ixl4OzzPMv",
        customer_id="cus_RiJ2m0yQbTgC4x",
        currency=draw(st.sampled_from(["usd", "eur", "jpy"])),
        status=status,
        amount_due=amount_due,
        amount_paid=amount_due
        if status == "paid"
        else draw(st.integers(min_value=0, max_value=amount_due)),
        first_failed_at=draw(_MOMENTS),
        settled_at=settled,
        paid_at=draw(st.none() | _MOMENTS) if status == "paid" else None,
        exhausted_at=draw(st.none() | _MOMENTS),
        exempt_since=draw(st.none() | _MOMENTS),
        decline_code=draw(st.sampled_from([None, "stolen_card", "insufficient_funds", "new"])),
        advice_code=draw(st.sampled_from([None, "do_not_try_again", "try_again_later"])),
        touches=tuple(touches),
    )


@given(st.lists(failed_invoices(), max_size=30))
def test_every_failed_amount_is_counted_once_per_currency(invoices):
    report = recovery_report(invoices, WINDOW)
    counted = [invoice for invoice in invoices if invoice.first_failed_at in WINDOW]
    assert set(report.currencies) == {invoice.currency for invoice in counted}
    for row in report.rows:
        if row.breakdown == "touch":
            continue
        assert row.failed_amount == (
            row.recovered_amount
            + row.partially_paid_amount
            + row.open_amount
            + row.exhausted_amount
            + row.unrecoverable_amount
        )
        assert row.failed_invoices == (
            row.recovered_invoices
            + row.open_invoices
            + row.exhausted_invoices
            + row.unrecoverable_invoices
        )
    for currency in report.currencies:
        mine = [invoice for invoice in counted if invoice.currency == currency]
        dunned = report.total(currency)
        exempt = [row for row in report.rows if row.scope == "exempt" and row.currency == currency]
        assert dunned.failed_amount + sum(row.failed_amount for row in exempt) == sum(
            invoice.amount_due for invoice in mine
        )
        touches = [r for r in report.rows if r.currency == currency and r.breakdown == "touch"]
        declines = [r for r in report.rows if r.currency == currency and r.breakdown == "decline"]
        assert sum(row.recovered_amount for row in touches) == dunned.recovered_amount
        assert sum(row.failed_amount or 0 for row in declines) == dunned.failed_amount
        if dunned.median_time_to_recover is not None:
            assert dunned.median_time_to_recover <= dunned.p90_time_to_recover
