"""What a failed payment tells about its decline, from each place Stripe puts it.

Stripe reports one failed charge in several objects, and which of them carry the decline
depends on the API version and on what was expanded:

- a PaymentIntent's ``last_payment_error`` (https://docs.stripe.com/api/payment_intents/
  object#payment_intent_object-last_payment_error): ``code``, ``decline_code``,
  ``advice_code`` and the ``payment_method`` object that failed (or a card ``source``);
- an invoice carries that PaymentIntent under ``payment_intent`` on API versions before
  2025-03-31.basil, when expanded; from basil on it lists its payments under ``payments``
  (``payments.data[].payment.payment_intent``, an id unless expanded);
- a Charge (``charge.failed``): ``failure_code``, ``outcome.reason`` (the decline code of
  an issuer decline, https://docs.stripe.com/declines#issuer-declines),
  ``outcome.advice_code`` and the ``payment_method`` id; ``invoice`` before basil.

Every reader here tolerates what it does not find: a decline Stripe leaves out is None,
never an error, since a missing decline must not keep a failure from its alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudgreet_billing.domain.declines import HARD_DECLINES, SOFT_DECLINES
from cloudgreet_billing.domain.stripe_fields import Fields, is_stripe_id
from cloudgreet_billing.errors import BadInput

#: The prefixes a payment method that can fail carries: a PaymentMethod, or the older
#: Card and Source objects (https://docs.stripe.com/payments/payment-methods/transitioning).
PAYMENT_METHOD_PREFIXES = ("pm_", "card_", "src_")


@dataclass(frozen=True, slots=True)
class Decline:
    """The decline of one failed payment: each part None where Stripe gave none."""

    decline_code: str | None = None
    advice_code: str | None = None
    payment_method: str | None = None

    @property
    def known(self) -> bool:
        return self.decline_code is not None or self.advice_code is not None


NO_DECLINE = Decline()


def payment_method_id(value: Any) -> str | None:
    """A payment method's id, given as an id or as the expanded object; None otherwise."""
    if isinstance(value, Mapping):
        value = value.get("id")
    for prefix in PAYMENT_METHOD_PREFIXES:
        if is_stripe_id(value, prefix):
            assert isinstance(value, str)
            return value
    return None


def decline_code_of(code: str | None, decline_code: str | None) -> str | None:
    """The decline code of an error: ``decline_code``, else ``code`` when that is itself
    one (Stripe sends ``expired_card`` or ``incorrect_number`` as the error code, sometimes
    without a separate ``decline_code``)."""
    if decline_code:
        return decline_code
    if code in HARD_DECLINES or code in SOFT_DECLINES:
        return code
    return None


def decline_of_error(error: Fields | None) -> Decline:
    """A ``last_payment_error``'s decline."""
    if error is None:
        return NO_DECLINE
    method = payment_method_id(error.raw("payment_method")) or payment_method_id(
        error.raw("source")
    )
    return Decline(
        decline_code=decline_code_of(_text(error, "code"), _text(error, "decline_code")),
        advice_code=_text(error, "advice_code"),
        payment_method=method,
    )


def decline_of_payment_intent(intent: Mapping[str, Any]) -> Decline:
    """A PaymentIntent's last decline; the payment method it tried when the error names none."""
    fields = Fields(intent, f"payment_intent {intent.get('id')}")
    error = _nested(fields, "last_payment_error")
    decline = decline_of_error(error)
    if decline.payment_method is None and decline.known:
        tried = payment_method_id(intent.get("payment_method"))
        decline = Decline(decline.decline_code, decline.advice_code, tried)
    return decline


def decline_of_charge(charge: Mapping[str, Any]) -> Decline:
    """A failed Charge's decline: ``outcome.reason`` for an issuer decline, else the
    ``failure_code`` when it is a decline code."""
    fields = Fields(charge, f"charge {charge.get('id')}")
    outcome = _nested(fields, "outcome")
    reason = None if outcome is None else _text(outcome, "reason")
    issuer = outcome is not None and _text(outcome, "type") == "issuer_declined"
    return Decline(
        decline_code=decline_code_of(_text(fields, "failure_code"), reason if issuer else None),
        advice_code=None if outcome is None else _text(outcome, "advice_code"),
        payment_method=payment_method_id(charge.get("payment_method"))
        or payment_method_id(charge.get("source")),
    )


def invoice_payment_intents(invoice: Mapping[str, Any]) -> list[Any]:
    """The PaymentIntents an invoice names, most relevant first: the expanded
    ``payment_intent`` of older API versions, else those its ``payments`` list (the
    default payment first, then newest first), each an id or an expanded object."""
    intent = invoice.get("payment_intent")
    if intent is not None:
        return [intent]
    payments = invoice.get("payments")
    listed = payments.get("data") if isinstance(payments, Mapping) else None
    if not isinstance(listed, list):
        return []
    ranked = sorted(
        (p for p in listed if isinstance(p, Mapping)),
        key=lambda p: (p.get("is_default") is True, _created(p)),
        reverse=True,
    )
    found: list[Any] = []
    for payment in ranked:
        inner = payment.get("payment")
        if isinstance(inner, Mapping) and inner.get("type") == "payment_intent":
            pi = inner.get("payment_intent")
            if isinstance(pi, Mapping) or is_stripe_id(pi, "pi_"):
                found.append(pi)
    return found


def decline_of_invoice(invoice: Mapping[str, Any]) -> Decline:
    """The decline an invoice carries itself: that of the first expanded PaymentIntent
    it names (``invoice_payment_intents``). An intent named by id alone gives none here;
    the gateway fetches it (``services.sync``)."""
    for intent in invoice_payment_intents(invoice):
        if isinstance(intent, Mapping):
            return decline_of_payment_intent(intent)
    return NO_DECLINE


def default_payment_method(customer: Mapping[str, Any]) -> str | None:
    """A customer's ``invoice_settings.default_payment_method`` (the card invoices charge
    first), else its ``default_source``."""
    settings = customer.get("invoice_settings")
    chosen = settings.get("default_payment_method") if isinstance(settings, Mapping) else None
    return payment_method_id(chosen) or payment_method_id(customer.get("default_source"))


def _text(fields: Fields, key: str) -> str | None:
    try:
        value = fields.optional_string(key)
    except BadInput:
        return None
    return value or None


def _nested(fields: Fields, key: str) -> Fields | None:
    try:
        return fields.nested(key)
    except BadInput:
        return None


def _created(payment: Mapping[str, Any]) -> int:
    created = payment.get("created")
    return created if type(created) is int else 0
