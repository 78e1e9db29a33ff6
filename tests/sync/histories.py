"""Realistic Stripe event histories (hypothesis), oldest first, as Stripe creates them.

Each history follows a few customers through a billing cycle the way Stripe reports it:
the customer and subscription are created, an invoice is drafted, finalized and charged;
payments fail and are retried (the subscription goes ``past_due``); the invoice is paid
(``invoice.paid`` and ``invoice.payment_succeeded`` in the same second, the subscription
updated twice in that second), voided, written off or left open. Objects are whole, with
the nulls Stripe sends, and ids have Stripe's length. Events in the same second are the
rule, not the exception: ``invoice.finalized`` with the first ``invoice.payment_failed``,
the payment with the subscription's updates.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from hypothesis import strategies as st

from cloudgreet_billing.adapters.store.migrations import TABLES
from cloudgreet_billing.services.sync import apply_events
from tests.sync.conftest import T0, event, full_invoice

DAY: Final = 86_400
#: When every test here applies its events: the store's own stamps are the same each time.
NOW: Final = datetime(2026, 6, 20, 9, 0, tzinfo=UTC)
INVOICE: Final = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
CUSTOMER: Final = "cus_RiJ2m0yQbTgC4x"
SUBSCRIPTION: Final = "sub_1QpL7xLkdIwHu7ixWq3bN2Zs"
_ALPHABET: Final = string.ascii_letters + string.digits
#: Declines as Stripe reports them on the payment (``last_payment_error``).
DECLINES: Final = (
    ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ("card_declined", "generic_decline", "Your card was declined."),
    ("expired_card", None, "Your card has expired."),
    ("card_declined", "do_not_honor", "Your card was declined."),
    ("card_declined", "stolen_card", "Your card was declined."),
)
#: The issuer's advice a decline may carry (``last_payment_error.advice_code``).
ADVICE: Final = (None, None, "try_again_later", "do_not_try_again", "confirm_card_data")
#: The cards a customer pays with: the one on file, then the one they change to.
CARDS: Final = ("pm_1QpL8ILkdIwHu7ixVisa4242", "pm_1QpL9ZLkdIwHu7ixMcrd4444")


def _stripe_id(prefix: str, serial: int, salt: str) -> str:
    """An id of Stripe's length (``in_`` + 24): a serial for uniqueness, a drawn salt for
    the order among ids (which breaks ties), the rest fixed."""
    body = f"1QpL{salt}{serial:06d}"
    return prefix + (body + "LkdIwHu7ixl4OzzPMvXq")[:24]


def apply(store: Any, *deliveries: list[dict[str, Any]]) -> None:
    """Apply each delivery as ``sync`` and ``serve`` do (``apply_events``), at ``NOW``."""
    for delivery in deliveries:
        report = apply_events(store, delivery, source="file", now=NOW)
        assert report.events_failed == 0, report.failures


def wipe(store: Any) -> None:
    """Empty every table but the schema's version."""
    with store._transaction():
        for table in reversed(TABLES):
            if table != "billing_schema_version":
                # Table names from the schema's own list, never from input.
                store._execute(f"DELETE FROM {table}")  # noqa: S608


def customer_object(
    customer_id: str, *, email: str | None, created: int, card: str | None = None
) -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": "usd",
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": email,
        "invoice_prefix": "CG0042",
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": card,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": "Bright Smiles Dental",
        "next_invoice_sequence": 8,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def subscription_object(
    sub_id: str,
    customer_id: str,
    *,
    status: str,
    created: int,
    period_start: int,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "billing_cycle_anchor": created,
        "cancel_at": None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer_id,
        "days_until_due": None,
        "default_payment_method": None,
        "discounts": [],
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_RiJ2Xy6hQm1Abc",
                    "object": "subscription_item",
                    "current_period_end": period_start + 30 * DAY,
                    "current_period_start": period_start,
                    "discounts": [],
                    "metadata": {},
                    "price": {
                        "id": "price_1QkP0ALkdIwHu7ixRecpt129",
                        "object": "price",
                        "currency": "usd",
                        "unit_amount": 12900,
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                    "quantity": 1,
                }
            ],
            "has_more": False,
            "total_count": 1,
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "status": status,
        "test_clock": None,
        "trial_end": None,
    }


def usage_alert_object(customer_id: str, *, value: int, created: int) -> dict[str, Any]:
    """A ``billing.alert_triggered``: the customer's metered usage crossed a threshold."""
    return {
        "object": "billing.alert_triggered",
        "alert": {
            "id": "alrt_1QpL8ILkdIwHu7ixCallsOver",
            "object": "billing.alert",
            "alert_type": "usage_threshold",
            "livemode": False,
            "status": "active",
            "title": "Calls over plan",
            "usage_threshold": {
                "filters": None,
                "gte": 1000,
                "meter": "mtr_61QpL8ILkdIwHu7ixBookedCalls",
                "recurrence": "one_time",
            },
        },
        "created": created,
        "customer": customer_id,
        "livemode": False,
        "value": value,
    }


def invoice_object(
    invoice_id: str,
    customer_id: str,
    sub_id: str,
    *,
    status: str,
    attempt_count: int,
    created: int,
    amount: int,
    decline: tuple[str, str | None, str] | None = None,
    email: str | None = "owner@brightsmiles.example",
    advice: str | None = None,
    card: str | None = None,
    listed_payment: bool = False,
) -> dict[str, Any]:
    """An invoice; with ``decline``, its PaymentIntent expanded with its last error, under
    ``payment_intent`` (before API 2025-03-31.basil) or, ``listed_payment``, under
    ``payments`` (from basil, ``payments.data[].payment.payment_intent``)."""
    obj = full_invoice(
        invoice_id,
        customer=customer_id,
        subscription=sub_id,
        status=status,
        amount=amount,
        attempt_count=attempt_count,
        created=created,
    )
    obj["customer_email"] = email
    if status == "draft":
        obj["number"] = None
        obj["status_transitions"]["finalized_at"] = None
        obj["hosted_invoice_url"] = None
        obj["invoice_pdf"] = None
    if status == "void":
        obj["status_transitions"]["voided_at"] = created + 10 * DAY
        obj["amount_remaining"] = 0
    if status == "uncollectible":
        obj["status_transitions"]["marked_uncollectible_at"] = created + 10 * DAY
    if decline is not None:
        code, decline_code, message = decline
        intent = {
            "id": "pi_3QpL8ILkdIwHu7ix0uJ5wQ2e",
            "object": "payment_intent",
            "status": "requires_payment_method",
            "payment_method": None,
            "last_payment_error": {
                "advice_code": advice,
                "code": code,
                "decline_code": decline_code,
                "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
                "message": message,
                "network_advice_code": None,
                "network_decline_code": None,
                "param": None,
                "payment_method": None
                if card is None
                else {"id": card, "object": "payment_method", "type": "card"},
                "payment_method_type": "card",
                "type": "card_error",
            },
        }
        if listed_payment:
            obj["payments"] = {
                "object": "list",
                "data": [
                    {
                        "id": "inpay_1QpL8ILkdIwHu7ixPaYmEnT0",
                        "object": "invoice_payment",
                        "amount_paid": None,
                        "amount_requested": amount,
                        "created": created + 3600,
                        "currency": "usd",
                        "invoice": invoice_id,
                        "is_default": True,
                        "livemode": False,
                        "payment": {"type": "payment_intent", "payment_intent": intent},
                        "status": "open",
                        "status_transitions": {"canceled_at": None, "paid_at": None},
                    }
                ],
                "has_more": False,
                "url": f"/v1/invoice_payments?invoice={invoice_id}",
            }
        else:
            obj["payment_intent"] = intent
    return obj


Add = Callable[[str, dict[str, Any], int], None]


@st.composite
def histories(draw: st.DrawFn, max_invoices: int = 3) -> list[dict[str, Any]]:
    """Events about one to ``max_invoices`` invoices, oldest first (ties as drawn)."""
    events: list[dict[str, Any]] = []
    serial = 0
    salt = draw(st.text(_ALPHABET, min_size=4, max_size=4))

    def add(kind: str, obj: dict[str, Any], created: int) -> None:
        nonlocal serial
        serial += 1
        event_salt = draw(st.text(_ALPHABET, min_size=4, max_size=4))
        events.append(event(_stripe_id("evt_", serial, event_salt), kind, obj, created))

    for n in range(draw(st.integers(1, max_invoices))):
        _billing_cycle(draw, add, n, salt)
    events.sort(key=lambda item: item["created"])  # stable: same-second ties as drawn
    return events


def _billing_cycle(draw: st.DrawFn, add: Add, n: int, salt: str) -> None:
    """One customer's invoice from draft to its end, with the subscription's updates."""
    customer_id = _stripe_id("cus_", n, salt)[:18]
    sub_id = _stripe_id("sub_", n, salt)
    invoice_id = _stripe_id("in_", n, salt)
    start = T0 + n * 7 * DAY + draw(st.integers(0, 3600))
    email = draw(st.sampled_from(["owner@brightsmiles.example", None]))
    amount = draw(st.sampled_from([12900, 4900, 19900]))

    def sub(status: str, moment: int, *, cancel: bool = False) -> None:
        obj = subscription_object(
            sub_id,
            customer_id,
            status=status,
            created=start,
            period_start=start,
            cancel_at_period_end=cancel,
        )
        kind = (
            "customer.subscription.created" if moment == start else "customer.subscription.updated"
        )
        add(kind, obj, moment)

    def inv(kind: str, status: str, attempts: int, moment: int, **extra: Any) -> None:
        obj = invoice_object(
            invoice_id,
            customer_id,
            sub_id,
            status=status,
            attempt_count=attempts,
            created=start + 3600,
            amount=amount,
            email=email,
            **extra,
        )
        add(kind, obj, moment)

    first_card = draw(st.sampled_from([None, CARDS[0]]))
    add(
        "customer.created",
        customer_object(customer_id, email=email, created=start, card=first_card),
        start,
    )
    sub("incomplete", start)
    sub("active", start + 5)
    inv("invoice.created", "draft", 0, start + 3600)
    moment = start + 7200
    inv("invoice.finalized", "open", 0, moment)
    attempts = draw(st.integers(0, 3))
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            moment += draw(st.sampled_from([DAY, 3 * DAY, 5 * DAY]))
        decline = draw(st.sampled_from([None, *DECLINES]))
        # The first charge is made as the invoice is finalized: the same second.
        inv(
            "invoice.payment_failed",
            "open",
            attempt,
            moment,
            decline=decline,
            advice=draw(st.sampled_from(ADVICE)),
            card=draw(st.sampled_from([None, CARDS[0]])),
            listed_payment=draw(st.booleans()),
        )
        inv("invoice.updated", "open", attempt, moment)
        if attempt == 1:
            sub("past_due", moment)
    if attempts and draw(st.booleans()):
        inv("invoice.payment_action_required", "open", attempts, moment + 60)
    if draw(st.booleans()):
        new_email = draw(st.sampled_from(["billing@brightsmiles.example", None]))
        new_card = draw(st.sampled_from([None, *CARDS]))
        add(
            "customer.updated",
            customer_object(customer_id, email=new_email, created=start, card=new_card),
            moment + draw(st.integers(0, 2 * DAY)),
        )
    # Usage past the plan's threshold, reported once or (a late meter event) twice.
    for value in draw(st.sampled_from([(), (1200,), (1200, 1350)])):
        usage = usage_alert_object(customer_id, value=value, created=moment)
        add("billing.alert.triggered", usage, moment + draw(st.sampled_from([0, 30])))
    ending = draw(st.sampled_from(["paid", "paid", "void", "uncollectible", "open"]))
    settled_at = moment + draw(st.sampled_from([0, 1, DAY]))
    if ending == "paid":
        # Stripe sends both in the same second, and the subscription's two updates.
        inv("invoice.paid", "paid", attempts, settled_at)
        inv("invoice.payment_succeeded", "paid", attempts, settled_at)
        sub("active", settled_at)
        sub("active", settled_at, cancel=draw(st.booleans()))
    elif ending == "void":
        inv("invoice.voided", "void", attempts, settled_at)
        sub("canceled", settled_at)
    elif ending == "uncollectible":
        inv("invoice.marked_uncollectible", "uncollectible", attempts, settled_at)
        sub("unpaid", settled_at)
        if draw(st.booleans()):
            later = settled_at + 2 * DAY
            inv("invoice.paid", "paid", attempts, later)
            sub("active", later)


@st.composite
def deliveries(draw: st.DrawFn, history: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``history`` as it may arrive: in any order, some events more than once (Stripe
    redelivers, and replays overlap), in one to four deliveries (webhooks, syncs)."""
    arrived = list(draw(st.permutations(history)))
    for _ in range(draw(st.integers(0, max(1, len(history) // 3)))):
        again = draw(st.sampled_from(history))
        arrived.insert(draw(st.integers(0, len(arrived))), again)
    cuts = sorted(draw(st.lists(st.integers(1, len(arrived)), max_size=3, unique=True)))
    bounds = [0, *cuts, len(arrived)]
    return [arrived[a:b] for a, b in itertools.pairwise(bounds) if a < b]
