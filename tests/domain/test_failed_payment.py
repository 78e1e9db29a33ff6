"""Where Stripe puts a failed payment's decline, read from each object that carries it."""

from __future__ import annotations

from typing import Any

from cloudgreet_billing.domain.events import failure_of, plan_event
from cloudgreet_billing.domain.failed_payment import (
    Decline,
    decline_of_charge,
    decline_of_invoice,
    decline_of_payment_intent,
    default_payment_method,
    invoice_payment_intents,
)
from cloudgreet_billing.domain.mirror import parse_customer

INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
INTENT = "pi_3QpL8ILkdIwHu7ix0uJ5wQ2e"
CARD = "pm_1QpL8ILkdIwHu7ixVisa4242"


def payment_intent(
    decline_code: str | None = "stolen_card",
    *,
    advice_code: str | None = "do_not_try_again",
    error_card: bool = True,
    invoice: str | None = None,
) -> dict[str, Any]:
    """A PaymentIntent after a declined charge, as ``payment_intent.payment_failed`` sends
    it: ``last_payment_error`` with the PaymentMethod expanded, the intent's own
    ``payment_method`` cleared (Stripe detaches a failed one, status
    ``requires_payment_method``)."""
    intent: dict[str, Any] = {
        "id": INTENT,
        "object": "payment_intent",
        "amount": 12900,
        "currency": "usd",
        "customer": "cus_RiJ2m0yQbTgC4x",
        "created": 1_780_000_000,
        "last_payment_error": {
            "advice_code": advice_code,
            "charge": "ch_3QpL8ILkdIwHu7ix0Kq1aB2c",
            "code": "card_declined",
            "decline_code": decline_code,
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card was declined.",
            "network_advice_code": None,
            "network_decline_code": "43",
            "param": None,
            "payment_method": {"id": CARD, "object": "payment_method", "type": "card"}
            if error_card
            else None,
            "payment_method_type": "card",
            "type": "card_error",
        },
        "latest_charge": "ch_3QpL8ILkdIwHu7ix0Kq1aB2c",
        "livemode": False,
        "payment_method": None,
        "status": "requires_payment_method",
    }
    if invoice is not None:
        intent["invoice"] = invoice
    return intent


def charge(outcome_type: str = "issuer_declined", reason: str | None = "insufficient_funds"):
    return {
        "id": "ch_3QpL8ILkdIwHu7ix0Kq1aB2c",
        "object": "charge",
        "amount": 12900,
        "currency": "usd",
        "created": 1_780_000_000,
        "failure_code": "card_declined",
        "failure_message": "Your card has insufficient funds.",
        "invoice": None,
        "livemode": False,
        "outcome": {
            "advice_code": "try_again_later",
            "network_advice_code": None,
            "network_decline_code": "51",
            "network_status": "declined_by_network",
            "reason": reason,
            "risk_level": "normal",
            "seller_message": "The bank returned the decline code `insufficient_funds`.",
            "type": outcome_type,
        },
        "paid": False,
        "payment_intent": INTENT,
        "payment_method": CARD,
        "status": "failed",
    }


def test_a_payment_intent_gives_its_decline_advice_and_the_card_that_failed() -> None:
    assert decline_of_payment_intent(payment_intent()) == Decline(
        "stolen_card", "do_not_try_again", CARD
    )


def test_an_error_code_that_is_a_decline_code_counts_as_one() -> None:
    intent = payment_intent(None, advice_code=None)
    intent["last_payment_error"]["code"] = "expired_card"
    assert decline_of_payment_intent(intent).decline_code == "expired_card"


def test_a_charge_gives_the_issuers_reason_not_the_generic_code() -> None:
    assert decline_of_charge(charge()) == Decline("insufficient_funds", "try_again_later", CARD)
    # A block by Radar is no issuer decline: its reason names a rule, not the card.
    blocked = decline_of_charge(charge("blocked", "highest_risk_level"))
    assert blocked.decline_code is None


def test_an_invoice_names_its_payments_default_first_on_newer_api_versions() -> None:
    def listed(payment_intent: Any, *, default: bool, created: int) -> dict[str, Any]:
        return {
            "object": "invoice_payment",
            "created": created,
            "is_default": default,
            "payment": {"type": "payment_intent", "payment_intent": payment_intent},
            "status": "open",
        }

    invoice = {
        "id": INVOICE,
        "object": "invoice",
        "payments": {
            "object": "list",
            "data": [
                listed("pi_3QpL8ILkdIwHu7ixOldOne01", default=False, created=1_780_000_100),
                listed(payment_intent(), default=True, created=1_780_000_000),
                {"object": "invoice_payment", "payment": {"type": "payment_record"}},
            ],
            "has_more": False,
        },
    }
    names = invoice_payment_intents(invoice)
    assert [n if isinstance(n, str) else n["id"] for n in names] == [
        INTENT,
        "pi_3QpL8ILkdIwHu7ixOldOne01",
    ]
    assert decline_of_invoice(invoice).decline_code == "stolen_card"
    failure = failure_of({**invoice, "attempt_count": 2})
    assert (failure.code, failure.message) == ("stolen_card", "Your card was declined.")


def test_an_invoice_naming_its_payment_by_id_alone_carries_no_decline() -> None:
    invoice = {
        "id": INVOICE,
        "payments": {"data": [{"payment": {"type": "payment_intent", "payment_intent": INTENT}}]},
        "attempt_count": 1,
        "last_finalization_error": None,
    }
    assert decline_of_invoice(invoice) == Decline()
    assert failure_of(invoice).message == "payment attempt 1 failed"


def test_the_customers_card_is_its_invoice_default_else_its_default_source() -> None:
    customer = {
        "id": "cus_RiJ2m0yQbTgC4x",
        "object": "customer",
        "invoice_settings": {"default_payment_method": CARD},
        "default_source": "card_1QpL8ILkdIwHu7ixOldCard0",
    }
    assert default_payment_method(customer) == CARD
    assert parse_customer(customer).default_payment_method == CARD
    customer["invoice_settings"]["default_payment_method"] = None
    assert default_payment_method(customer) == "card_1QpL8ILkdIwHu7ixOldCard0"
    customer["default_source"] = None
    assert parse_customer(customer).default_payment_method is None


def event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "evt_3QpL8ILkdIwHu7ix1Xr2pQ9a",
        "object": "event",
        "type": event_type,
        "created": 1_780_000_001,
        "livemode": False,
        "api_version": "2026-10-28.endive",
        "data": {"object": obj},
    }


def test_payment_events_are_planned_for_the_gateway_to_link_to_their_invoice() -> None:
    plan = plan_event(event("payment_intent.payment_failed", payment_intent()), "webhook")
    assert plan.outcome == "skipped", "nothing to mirror until Stripe names the invoice"
    assert plan.payment_failure is not None
    assert plan.payment_failure.payment_intent_id == INTENT
    assert plan.payment_failure.invoice_id is None
    assert plan.payment_failure.failure.decline.decline_code == "stolen_card"
    # Older API versions name the invoice on the charge and the intent themselves.
    older = charge()
    older["invoice"] = INVOICE
    plan = plan_event(event("charge.failed", older), "webhook")
    assert plan.payment_failure is not None
    assert plan.payment_failure.invoice_id == INVOICE
    assert plan.payment_failure.failure.summary() == (
        "insufficient_funds: Your card has insufficient funds."
    )
