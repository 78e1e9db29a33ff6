"""Reconciliation arithmetic, by hand: every expected figure below is computed in the comment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cloudgreet_billing.domain.mirror import parse_invoice
from cloudgreet_billing.domain.reconciliation import (
    Window,
    invoice_differences,
    reconcile_totals,
    stripe_totals,
    variance_pct,
)
from tests.finance.factories import NOW, invoice

WINDOW = Window(start=NOW - timedelta(days=30), end=NOW)
ONE = Decimal("1.0")


def row_of(rows, customer, currency):
    (found,) = [r for r in rows if (r.customer_id, r.currency) == (customer, currency)]
    return found


def test_stripe_side_counts_total_excluding_tax_and_skips_draft_and_void():
    invoices = [
        parse_invoice(invoice("in_1", "cus_A", total=1200, total_excluding_tax=1000)),
        parse_invoice(invoice("in_2", "cus_A", total=500)),  # no field: total
        parse_invoice(invoice("in_3", "cus_A", total=999, status="draft")),
        parse_invoice(invoice("in_4", "cus_A", total=999, status="void")),
        parse_invoice(invoice("in_5", "cus_A", total=700, status="open")),
        parse_invoice(invoice("in_6", "cus_A", total=300, status="uncollectible")),
    ]
    # 1000 + 500 + 700 + 300 = 2500
    assert stripe_totals(invoices, WINDOW) == {("cus_A", "usd"): 2500}


def test_window_is_half_open_on_created():
    at_start = parse_invoice(invoice("in_1", "cus_A", total=100, created=WINDOW.start))
    at_end = parse_invoice(invoice("in_2", "cus_A", total=10_000, created=WINDOW.end))
    before = parse_invoice(
        invoice("in_3", "cus_A", total=1, created=WINDOW.start - timedelta(seconds=1))
    )
    assert stripe_totals([at_start, at_end, before], WINDOW) == {("cus_A", "usd"): 100}


def test_multi_currency_credits_and_one_sided_customers():
    stripe = {("cus_A", "usd"): 10_000, ("cus_A", "eur"): 5_000, ("cus_B", "usd"): 2_000}
    # cus_A usd: 10,500 billed usage − 500 credit = 10,000 → match.
    # cus_A eur: ledger 4,000 → variance 1,000 / 5,000 = 20% → mismatch.
    # cus_B: only in Stripe → 100%. cus_C: only in the ledger → variance −300, 100%.
    ledger = {("cus_A", "usd"): 10_500 - 500, ("cus_A", "eur"): 4_000, ("cus_C", "jpy"): 300}
    rows = reconcile_totals(stripe, ledger, ONE)
    assert [(r.customer_id, r.currency) for r in rows] == [
        ("cus_A", "eur"),
        ("cus_A", "usd"),
        ("cus_B", "usd"),
        ("cus_C", "jpy"),
    ]
    usd = row_of(rows, "cus_A", "usd")
    assert (usd.variance, usd.variance_pct, usd.status) == (0, Decimal(0), "match")
    eur = row_of(rows, "cus_A", "eur")
    assert (eur.variance, eur.variance_pct, eur.status) == (1_000, Decimal(20), "mismatch")
    only_stripe = row_of(rows, "cus_B", "usd")
    assert (only_stripe.ledger_total, only_stripe.variance, only_stripe.variance_pct) == (
        0,
        2_000,
        Decimal(100),
    )
    only_ledger = row_of(rows, "cus_C", "jpy")
    assert (only_ledger.stripe_total, only_ledger.variance, only_ledger.status) == (
        0,
        -300,
        "mismatch",
    )


def test_threshold_edges_exactly_one_percent_matches_one_point_oh_one_does_not():
    # 100 of 10,000 = 1.00% (not over 1.0); 101 of 10,000 = 1.01% (over).
    rows = reconcile_totals(
        {("cus_A", "usd"): 10_000, ("cus_B", "usd"): 10_000},
        {("cus_A", "usd"): 9_900, ("cus_B", "usd"): 9_899},
        ONE,
    )
    assert row_of(rows, "cus_A", "usd").variance_pct == Decimal("1.00")
    assert row_of(rows, "cus_A", "usd").status == "match"
    assert row_of(rows, "cus_B", "usd").variance_pct == Decimal("1.01")
    assert row_of(rows, "cus_B", "usd").status == "mismatch"


def test_ledger_larger_than_stripe_divides_by_the_larger_side():
    # |9,900 − 10,000| / max(9,900, 10,000) = 100 / 10,000 = 1%
    assert variance_pct(9_900, 10_000) == Decimal(1)


def test_zero_totals_are_zero_percent_not_a_division_error():
    rows = reconcile_totals({("cus_A", "usd"): 0}, {("cus_A", "usd"): 0}, Decimal(0))
    assert (rows[0].variance, rows[0].variance_pct, rows[0].status) == (0, Decimal(0), "match")
    # A refund that nets a side to zero is still a full variance.
    assert variance_pct(0, -500) == Decimal(100)


def test_negative_totals_use_absolute_values():
    # stripe −1,000 (credit note larger than usage), ledger −990: 10 / 1,000 = 1%.
    assert variance_pct(-1_000, -990) == Decimal(1)


def test_invoice_differences_split_matched_differing_and_unmatched():
    billed = [
        parse_invoice(invoice("in_1", "cus_A", total=1000)),
        parse_invoice(invoice("in_2", "cus_A", total=2000)),
        parse_invoice(invoice("in_3", "cus_A", total=3000)),
    ]
    differing, unmatched = invoice_differences(
        billed, {("in_1", "usd"): 1000, ("in_2", "usd"): 1500}
    )
    assert [(d.invoice_id, d.variance) for d in differing] == [("in_2", 500)]
    assert [i.id for i in unmatched] == ["in_3"]


amounts = st.integers(min_value=-(10**9), max_value=10**9)
keys = st.tuples(st.sampled_from(["cus_A", "cus_B", "cus_C"]), st.sampled_from(["usd", "eur"]))


@given(
    stripe_invoices=st.lists(
        st.tuples(keys, st.integers(0, 10**9), st.sampled_from(["paid", "open", "void", "draft"]))
    ),
    ledger_entries=st.lists(st.tuples(keys, amounts)),
    threshold=st.decimals(min_value=0, max_value=100, places=2),
)
def test_rows_equal_independent_sums(stripe_invoices, ledger_entries, threshold):
    invoices = [
        parse_invoice(invoice(f"in_{n}", key[0], total=amount, currency=key[1], status=status))
        for n, (key, amount, status) in enumerate(stripe_invoices)
    ]
    ledger: dict[tuple[str, str], int] = {}
    for key, amount in ledger_entries:
        ledger[key] = ledger.get(key, 0) + amount
    rows = reconcile_totals(stripe_totals(invoices, WINDOW), ledger, threshold)
    for row in rows:
        key = (row.customer_id, row.currency)
        expected_stripe = sum(
            amount
            for k, amount, status in stripe_invoices
            if k == key and status in ("paid", "open")
        )
        expected_ledger = sum(amount for k, amount in ledger_entries if k == key)
        assert row.stripe_total == expected_stripe
        assert row.ledger_total == expected_ledger
        assert row.variance == expected_stripe - expected_ledger
        base = max(abs(expected_stripe), abs(expected_ledger))
        if base:
            # Decimal keeps 28 significant digits of a repeating quotient.
            assert abs(row.variance_pct * base - abs(row.variance) * 100) <= base * Decimal("1e-20")
        else:
            assert row.variance_pct == 0
        # The status is exact: compared as integers, with no division.
        assert (row.status == "mismatch") == (abs(row.variance) * 100 > threshold * base)
    seen = {key for key, _, status in stripe_invoices if status in ("paid", "open")}
    seen |= {key for key, _ in ledger_entries}
    assert {(r.customer_id, r.currency) for r in rows} == seen


def test_now_is_utc():
    assert NOW.tzinfo is UTC and datetime(2026, 11, 24, 12, tzinfo=UTC) == NOW
