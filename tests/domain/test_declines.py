"""Hard and soft declines, by Stripe's decline codes and the issuer's advice."""

from __future__ import annotations

import pytest

from cloudgreet_billing.domain.declines import HARD_DECLINES, SOFT_DECLINES, classify_decline


@pytest.mark.parametrize(
    "code",
    ["stolen_card", "lost_card", "pickup_card", "fraudulent", "expired_card", "incorrect_number"],
)
def test_the_issues_hard_declines_are_hard(code):
    assert classify_decline(code) == "hard"


@pytest.mark.parametrize("code", ["insufficient_funds", "processing_error", "try_again_later"])
def test_the_issues_soft_declines_are_soft(code):
    assert classify_decline(code) == "soft"


def test_a_code_stripe_adds_later_is_unknown_not_guessed():
    assert classify_decline("brand_new_code") == "unknown"
    assert classify_decline(None) == "unknown"


def test_the_issuers_advice_wins_over_the_table():
    assert classify_decline("insufficient_funds", "do_not_try_again") == "hard"
    assert classify_decline("generic_decline", "confirm_card_data") == "hard"
    assert classify_decline("stolen_card", "try_again_later") == "soft"
    assert classify_decline("stolen_card", "some_future_advice") == "hard"


def test_no_code_is_both_hard_and_soft():
    assert not HARD_DECLINES & SOFT_DECLINES
