"""Declines Stripe leaves out of an event, asked of Stripe when a key is configured.

From API 2025-03-31.basil an invoice no longer carries its PaymentIntent: a webhook's
``invoice.payment_failed`` names the payment at most by id (``payments.data[].payment.
payment_intent``), and the decline lives on that PaymentIntent. The PaymentIntent's own
``payment_intent.payment_failed`` and the Charge's ``charge.failed`` carry the decline but
no invoice (they name it only on older versions, under ``invoice``). With a gateway,
``complete_plan`` reads what is missing, so that every source leaves the same failure on
the invoice:

- an invoice failure without a decline, naming a PaymentIntent by id: that intent's
  ``last_payment_error``;
- a PaymentIntent's or Charge's failure: its invoice (named, or found through the invoice
  payment) as Stripe has it now, with this payment's decline, planned as the invoice's
  failure (``domain.events.payment_failure_plan``).

Without a gateway (events from a file, no key) plans stay as they are: invoice failures
keep what the invoice carries, and PaymentIntent and Charge events are recorded, skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from cloudgreet_billing.adapters.payments import PaymentGateway, StripeRequestFailed
from cloudgreet_billing.domain.events import EventPlan, InvoiceFailure, payment_failure_plan
from cloudgreet_billing.domain.failed_payment import (
    decline_of_payment_intent,
    invoice_payment_intents,
)
from cloudgreet_billing.domain.stripe_fields import Fields

_T = TypeVar("_T")


def complete_plan(plan: EventPlan, gateway: Callable[[], PaymentGateway | None]) -> EventPlan:
    """``plan`` with the decline Stripe left out of its event, read from Stripe.

    ``gateway`` is called only when the plan needs Stripe (None: no key), so that events
    carrying their decline, the common case, never open a gateway or import stripe."""
    if plan.payment_failure is not None:
        opened = gateway()
        return plan if opened is None else _linked_to_invoice(plan, opened)
    failure = plan.failure
    if failure is None or failure.decline.known or plan.invoice is None:
        return plan
    named = [i for i in invoice_payment_intents(plan.invoice.raw) if isinstance(i, str)]
    if not named:
        return plan
    opened = gateway()
    if opened is None:
        return plan
    intent = _missing_is_none(lambda: opened.retrieve_payment_intent(named[0]))
    if intent is None:
        return plan
    return replace(plan, failure=_failure_of_intent(intent, failure))


def _failure_of_intent(intent: Mapping[str, Any], fallback: InvoiceFailure) -> InvoiceFailure:
    decline = decline_of_payment_intent(intent)
    if not decline.known:
        return fallback
    error = Fields(intent, f"payment_intent {intent.get('id')}").nested("last_payment_error")
    message = None if error is None else error.optional_string("message")
    return InvoiceFailure(
        code=decline.decline_code or fallback.code,
        message=message or fallback.message,
        decline=decline,
    )


def _linked_to_invoice(plan: EventPlan, gateway: PaymentGateway) -> EventPlan:
    payment = plan.payment_failure
    assert payment is not None
    invoice_id = payment.invoice_id
    if invoice_id is None and payment.payment_intent_id is not None:
        intent_id = payment.payment_intent_id
        invoice_id = _missing_is_none(lambda: gateway.invoice_of_payment_intent(intent_id))
    if invoice_id is None:
        return plan  # a payment that no invoice asked for (a one-off charge): not ours
    found = invoice_id
    invoice = _missing_is_none(lambda: gateway.retrieve_invoice(found))
    if invoice is None:
        return plan
    return payment_failure_plan(plan, invoice, payment.failure)


def _missing_is_none(read: Callable[[], _T]) -> _T | None:
    """What ``read`` returns, or None when Stripe has no such object (``resource_missing``):
    a deleted or foreign object leaves the event as it is; any other error goes on."""
    try:
        return read()
    except StripeRequestFailed as error:
        if error.stripe_code == "resource_missing":
            return None
        raise
