"""When charging an invoice again now cannot help: a hard decline on the same card, and a
retry Stripe is about to make itself.

- **Hard decline, same card.** A hard decline (``domain.declines``) means the card cannot
  pay: charging it again fails, and repeated declines on one card count against the
  merchant with the card networks (https://docs.stripe.com/declines/card#retrying-issuer-
  declines). Only a new card can pay, so a retry waits until the card the charge would use
  is another one than the card that failed. When either card is unknown, nobody can say it
  changed, and the charge waits too.
- **Do not race Stripe.** With Smart Retries or a retry schedule, ``next_payment_attempt``
  says when Stripe charges the invoice itself (API reference, invoice object). A manual
  charge shortly before it only moves the same attempt earlier, and a decline then spends
  one of the issuer's patience for nothing.

The card a charge uses is Stripe's order for invoices (https://docs.stripe.com/api/invoices/
object#invoice_object-default_payment_method): the invoice's ``default_payment_method``,
else its subscription's, else the customer's ``invoice_settings.default_payment_method``,
else the customer's ``default_source``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloudgreet_billing.domain.declines import classify_decline
from cloudgreet_billing.domain.failed_payment import default_payment_method, payment_method_id


def card_to_charge(
    invoice: Mapping[str, Any],
    subscription: Mapping[str, Any] | None,
    customer: Mapping[str, Any] | None,
) -> str | None:
    """The payment method a charge of ``invoice`` would use now (see the module doc)."""
    chosen = payment_method_id(invoice.get("default_payment_method")) or payment_method_id(
        invoice.get("default_source")
    )
    if chosen is None and subscription is not None:
        chosen = payment_method_id(subscription.get("default_payment_method")) or (
            payment_method_id(subscription.get("default_source"))
        )
    if chosen is None and customer is not None:
        chosen = default_payment_method(customer)
    return chosen


@dataclass(frozen=True, slots=True)
class HardDecline:
    """Why a retry of a hard decline must wait for a new card."""

    decline_code: str | None
    advice_code: str | None
    failed_payment_method: str | None
    payment_method: str | None

    @property
    def reason(self) -> str:
        """The decline as the refusal names it: the code, and the issuer's advice."""
        code = self.decline_code or "a hard decline"
        return f"{code} (advice {self.advice_code})" if self.advice_code else code

    @property
    def why_unchanged(self) -> str:
        if self.failed_payment_method is None:
            return "the card that failed is unknown, so nobody can tell it was replaced"
        if self.payment_method is None:
            failed = self.failed_payment_method
            return f"the card to charge is unknown, so nobody can tell {failed} was replaced"
        return f"the card to charge is still {self.payment_method}, the one that failed"


def hard_decline_on_same_card(
    decline_code: str | None,
    advice_code: str | None,
    failed_payment_method: str | None,
    payment_method: str | None,
) -> HardDecline | None:
    """The hard decline a retry must not repeat, or None when a retry may go: the decline
    is not hard, or the card to charge is a known card other than the one that failed."""
    if classify_decline(decline_code, advice_code) != "hard":
        return None
    if (
        failed_payment_method is not None
        and payment_method is not None
        and payment_method != failed_payment_method
    ):
        return None
    return HardDecline(decline_code, advice_code, failed_payment_method, payment_method)


def stripe_retries_soon(
    next_payment_attempt: datetime | None, now: datetime, window: timedelta
) -> bool:
    """Whether Stripe charges the invoice itself within ``window`` from ``now`` (a window
    of zero turns the check off)."""
    if next_payment_attempt is None or window <= timedelta(0):
        return False
    return now <= next_payment_attempt <= now + window


def in_words(delta: timedelta) -> str:
    """``2 h 10 min``, ``45 min``, ``under a minute``: how long until a moment."""
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "under a minute"
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
