"""Whether a declined payment can succeed if tried again: hard and soft declines.

The one table of Stripe decline codes in the toolkit. Its source is Stripe's decline code
reference (https://docs.stripe.com/declines/codes), read through its "Next steps" column:

- **hard**: the card itself cannot pay (it is lost, stolen, closed, expired, wrong, not
  allowed for this charge, or flagged as fraud). Stripe's advice is that the customer
  uses another card or updates its details, and Smart Retries does not retry them
  (https://docs.stripe.com/billing/revenue-recovery/smart-retries). Retrying the same
  card cannot succeed and counts against the merchant with the card networks.
- **soft**: the issuer said no for now (funds, limits, an outage, a generic refusal).
  Stripe's advice is to try again later, and Smart Retries does.

Codes Stripe may add later are ``unknown``: treated like soft ones (Stripe keeps
retrying), but reported on their own so nobody mistakes a new code for a known one.

Issuers can also send an ``advice_code`` (https://docs.stripe.com/declines/card#retrying-
issuer-declines). When present it wins over the table: ``do_not_try_again`` and
``confirm_card_data`` make a decline hard, ``try_again_later`` makes it soft.
"""

from __future__ import annotations

from typing import Literal

DeclineClass = Literal["hard", "soft", "unknown"]

#: Decline codes after which the same card cannot pay.
HARD_DECLINES: frozenset[str] = frozenset(
    {
        "card_not_supported",
        "currency_not_supported",
        "do_not_try_again",
        "expired_card",
        "fraudulent",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_zip",
        "invalid_account",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "not_permitted",
        "pickup_card",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "service_not_allowed",
        "stolen_card",
        "stop_payment_order",
        "testmode_decline",
        "transaction_not_allowed",
    }
)

#: Decline codes after which the same card may pay later.
SOFT_DECLINES: frozenset[str] = frozenset(
    {
        "approve_with_id",
        "authentication_required",
        "call_issuer",
        "card_velocity_exceeded",
        "do_not_honor",
        "duplicate_transaction",
        "generic_decline",
        "incorrect_pin",
        "insufficient_funds",
        "invalid_amount",
        "invalid_pin",
        "issuer_not_available",
        "no_action_taken",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "pin_try_exceeded",
        "processing_error",
        "reenter_transaction",
        "try_again_later",
        "withdrawal_count_limit_exceeded",
    }
)

#: Issuer advice codes, which override the table when present.
_ADVICE: dict[str, DeclineClass] = {
    "do_not_try_again": "hard",
    "confirm_card_data": "hard",
    "try_again_later": "soft",
}


def classify_decline(decline_code: str | None, advice_code: str | None = None) -> DeclineClass:
    """``hard``, ``soft`` or ``unknown`` for a failed payment's decline and advice codes."""
    if advice_code in _ADVICE:
        return _ADVICE[advice_code]
    if decline_code in HARD_DECLINES:
        return "hard"
    if decline_code in SOFT_DECLINES:
        return "soft"
    return "unknown"
