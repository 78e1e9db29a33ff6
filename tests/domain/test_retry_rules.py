"""When a manual retry cannot help: a hard decline on the same card, Stripe retrying soon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudgreet_billing.domain.retry_rules import (
    card_to_charge,
    hard_decline_on_same_card,
    in_words,
    stripe_retries_soon,
)

FAILED = "pm_1QpL8ILkdIwHu7ixVisa4242"
NEW = "pm_1QpL9ZLkdIwHu7ixMcrd4444"
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_a_hard_decline_waits_for_another_card() -> None:
    refusal = hard_decline_on_same_card("stolen_card", None, FAILED, FAILED)
    assert refusal is not None
    assert refusal.why_unchanged == f"the card to charge is still {FAILED}, the one that failed"
    assert hard_decline_on_same_card("stolen_card", None, FAILED, NEW) is None


def test_an_unknown_card_on_either_side_cannot_prove_a_change() -> None:
    unknown_failed = hard_decline_on_same_card("expired_card", None, None, NEW)
    assert (
        unknown_failed is not None and "card that failed is unknown" in unknown_failed.why_unchanged
    )
    unknown_now = hard_decline_on_same_card("expired_card", None, FAILED, None)
    assert unknown_now is not None and "card to charge is unknown" in unknown_now.why_unchanged


def test_soft_and_unknown_declines_and_the_issuers_advice() -> None:
    assert hard_decline_on_same_card("insufficient_funds", None, FAILED, FAILED) is None
    assert hard_decline_on_same_card("a_code_stripe_adds_later", None, FAILED, FAILED) is None
    # The issuer's advice wins over the table, both ways.
    advised = hard_decline_on_same_card("insufficient_funds", "do_not_try_again", FAILED, FAILED)
    assert advised is not None and advised.reason == "insufficient_funds (advice do_not_try_again)"
    assert hard_decline_on_same_card("stolen_card", "try_again_later", FAILED, FAILED) is None


def test_the_card_a_charge_uses_follows_stripes_order() -> None:
    customer = {"invoice_settings": {"default_payment_method": FAILED}, "default_source": None}
    subscription = {"default_payment_method": NEW}
    assert card_to_charge({"default_payment_method": None}, None, customer) == FAILED
    assert card_to_charge({"default_payment_method": None}, subscription, customer) == NEW
    invoice = {"default_payment_method": {"id": "pm_1QpLAaLkdIwHu7ixAmex0005"}}
    assert card_to_charge(invoice, subscription, customer) == "pm_1QpLAaLkdIwHu7ixAmex0005"
    assert card_to_charge({}, None, None) is None


def test_stripe_retries_soon_only_within_the_window() -> None:
    window = timedelta(hours=6)
    assert stripe_retries_soon(NOW + timedelta(hours=2), NOW, window)
    assert not stripe_retries_soon(NOW + timedelta(hours=7), NOW, window)
    assert not stripe_retries_soon(NOW - timedelta(minutes=1), NOW, window), "already past"
    assert not stripe_retries_soon(None, NOW, window), "Stripe will not retry"
    assert not stripe_retries_soon(NOW + timedelta(hours=1), NOW, timedelta(0)), "turned off"


def test_how_long_in_words() -> None:
    assert in_words(timedelta(hours=2, minutes=10)) == "2 h 10 min"
    assert in_words(timedelta(hours=3)) == "3 h"
    assert in_words(timedelta(minutes=45, seconds=59)) == "45 min"
    assert in_words(timedelta(seconds=20)) == "under a minute"
