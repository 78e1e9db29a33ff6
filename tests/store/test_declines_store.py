"""The store keeps each failure's decline and the customer's card, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cloudgreet_billing.adapters.store.protocol import AuditDraft
from cloudgreet_billing.domain.events import InvoiceFailure
from cloudgreet_billing.domain.failed_payment import Decline
from cloudgreet_billing.domain.mirror import parse_customer
from cloudgreet_billing.services.sync import apply_events
from tests.sync.conftest import T0, event, full_invoice

INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
CUSTOMER = "cus_RiJ2m0yQbTgC4x"
CARD = "pm_1QpL8ILkdIwHu7ixVisa4242"
NEW_CARD = "pm_1QpL9ZLkdIwHu7ixMcrd4444"
NOW = datetime.fromtimestamp(T0, UTC) + timedelta(hours=1)


def failed(event_id: str, created: int, *, attempt: int, decline_code: str) -> dict[str, Any]:
    obj = full_invoice(INVOICE, attempt_count=attempt)
    obj["next_payment_attempt"] = created + 3 * 86400
    obj["payment_intent"] = {
        "id": "pi_3QpL8ILkdIwHu7ix0uJ5wQ2e",
        "object": "payment_intent",
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": decline_code,
            "message": "Your card was declined.",
            "payment_method": {"id": CARD, "object": "payment_method"},
            "type": "card_error",
        },
    }
    return event(event_id, "invoice.payment_failed", obj, created)


def test_a_manual_decline_is_the_last_failure_until_a_later_attempt(store: Any) -> None:
    apply_events(
        store,
        [failed("evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, attempt=1, decline_code="generic_decline")],
        source="file",
        now=NOW,
    )
    store.record_failed_attempt(
        None,
        attempt_count=1,
        failure="stolen_card: Your card was declined.",
        note="manual retry",
        audit=AuditDraft("tester@ci", "retry", INVOICE, "declined"),
        now=NOW,
        declined=(
            INVOICE,
            InvoiceFailure(
                "stolen_card", "Your card was declined.", Decline("stolen_card", None, CARD)
            ),
        ),
    )
    mirrored = store.get_invoice(INVOICE)
    assert (mirrored.last_decline_code, mirrored.last_failure_code) == (
        "stolen_card",
        "stolen_card",
    )
    assert mirrored.first_failed_at == datetime.fromtimestamp(T0, UTC), "the first failure stays"
    # An older delivery of the first attempt changes nothing; Stripe's next attempt does.
    apply_events(
        store,
        [
            failed("evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, attempt=1, decline_code="generic_decline"),
            failed(
                "evt_1QpL8ILkdIwHu7ixPf9zZz9Z", T0 + 86400, attempt=2, decline_code="do_not_honor"
            ),
        ],
        source="file",
        now=NOW,
    )
    facts = store.invoice_facts(INVOICE)
    assert facts.decline_code == "do_not_honor"
    assert facts.next_payment_attempt == datetime.fromtimestamp(T0 + 4 * 86400, UTC)


def test_the_customers_card_round_trips(store: Any) -> None:
    customer = {
        "id": CUSTOMER,
        "object": "customer",
        "email": "owner@brightsmiles.example",
        "created": T0 - 86400,
        "default_source": None,
        "invoice_settings": {"default_payment_method": CARD},
        "livemode": False,
    }
    store.upsert_customer(parse_customer(customer), NOW, NOW)
    assert store.get_customer(CUSTOMER).default_payment_method == CARD
    customer["invoice_settings"] = {"default_payment_method": NEW_CARD}
    store.upsert_customer(parse_customer(customer), NOW + timedelta(minutes=1), NOW)
    assert store.get_customer(CUSTOMER).default_payment_method == NEW_CARD
