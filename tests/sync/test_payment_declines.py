"""Declines Stripe leaves out of an event are read from Stripe when a key is configured:
the PaymentIntent an invoice lists under ``payments`` (API 2025-03-31.basil and later), and
the invoice of a ``payment_intent.payment_failed`` or ``charge.failed``. Through ``sync``,
the real stripe SDK and a local Stripe, into SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.bootstrap import open_gateway
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.services.sync import apply_events
from tests.stripe_fake import FakeStripe, invoice_payment_filter, list_page, not_found
from tests.sync.conftest import T0, event, full_invoice
from tests.sync.histories import NOW, wipe
from tests.sync.test_sync_cli import cli, data

INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
INTENT = "pi_3QpL8ILkdIwHu7ix0uJ5wQ2e"
CARD = "pm_1QpL8ILkdIwHu7ixVisa4242"


def basil_invoice(attempt_count: int = 1) -> dict[str, Any]:
    """A failed invoice as API 2026-10-28 sends it: no ``payment_intent``; its payment
    listed under ``payments``, the PaymentIntent named by id only."""
    obj = full_invoice(INVOICE, attempt_count=attempt_count)
    obj.pop("payment_intent", None)
    obj["payments"] = {
        "object": "list",
        "data": [
            {
                "id": "inpay_1QpL8ILkdIwHu7ixPaYmEnT0",
                "object": "invoice_payment",
                "amount_paid": None,
                "amount_requested": obj["amount_due"],
                "created": T0 - 60,
                "currency": "usd",
                "invoice": INVOICE,
                "is_default": True,
                "livemode": False,
                "payment": {"type": "payment_intent", "payment_intent": INTENT},
                "status": "open",
                "status_transitions": {"canceled_at": None, "paid_at": None},
            }
        ],
        "has_more": False,
        "url": f"/v1/invoice_payments?invoice={INVOICE}",
    }
    return obj


def serve_invoice_payments(fake: FakeStripe) -> None:
    """The account's invoice payments, listed and filtered as Stripe does: the invoice's
    own, and a newer one of another customer's invoice, which a lookup that sent no filter
    (or the wrong one) would be given instead."""
    other = {
        **basil_invoice()["payments"]["data"][0],
        "id": "inpay_1QpL8ILkdIwHu7ixOtHeR000",
        "created": T0 - 30,
        "invoice": "in_1QpL8HLkdIwHu7ixOtHeR000",
        "payment": {"type": "payment_intent", "payment_intent": "pi_3QpL8ILkdIwHu7ixOtHeR000"},
    }
    fake.paginate(
        "/v1/invoice_payments",
        [*basil_invoice()["payments"]["data"], other],
        where=invoice_payment_filter,
    )


def declined_intent(decline_code: str = "stolen_card") -> dict[str, Any]:
    """The PaymentIntent after the decline (no ``invoice`` field from basil on)."""
    return {
        "id": INTENT,
        "object": "payment_intent",
        "amount": 12900,
        "created": T0 - 60,
        "currency": "usd",
        "customer": "cus_RiJ2m0yQbTgC4x",
        "last_payment_error": {
            "advice_code": None,
            "code": "card_declined",
            "decline_code": decline_code,
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card was declined.",
            "payment_method": {"id": CARD, "object": "payment_method", "type": "card"},
            "type": "card_error",
        },
        "livemode": False,
        "payment_method": None,
        "status": "requires_payment_method",
    }


def failed_charge(*, invoice: str | None) -> dict[str, Any]:
    return {
        "id": "ch_3QpL8ILkdIwHu7ix0Kq1aB2c",
        "object": "charge",
        "amount": 12900,
        "created": T0,
        "currency": "usd",
        "failure_code": "expired_card",
        "failure_message": "Your card has expired.",
        "invoice": invoice,
        "livemode": False,
        "outcome": {
            "advice_code": None,
            "network_status": "declined_by_network",
            "reason": "expired_card",
            "type": "issuer_declined",
        },
        "paid": False,
        "payment_intent": INTENT,
        "payment_method": CARD,
        "status": "failed",
    }


def test_a_payment_listed_by_id_is_read_for_its_decline(fake: FakeStripe, store: Any) -> None:
    fake.paginate(
        "/v1/events",
        [event("evt_1QpL8ILkdIwHu7ixPf2aLd0B", "invoice.payment_failed", basil_invoice(), T0)],
    )
    fake.reply("GET", f"/v1/payment_intents/{INTENT}", declined_intent())

    report = data(cli("sync", "--json"))

    assert report["events_applied"] == 1
    mirrored = store.get_invoice(INVOICE)
    assert (mirrored.last_decline_code, mirrored.last_failure_payment_method) == (
        "stolen_card",
        CARD,
    )
    assert (mirrored.last_failure_code, mirrored.last_failure_message) == (
        "stolen_card",
        "Your card was declined.",
    )


def test_a_payment_intent_event_finds_its_invoice_through_the_invoice_payment(
    fake: FakeStripe, store: Any
) -> None:
    failed_event = event(
        "evt_3QpL8ILkdIwHu7ix1Xr2pQ9a", "payment_intent.payment_failed", declined_intent(), T0
    )
    fake.paginate("/v1/events", [failed_event])
    serve_invoice_payments(fake)
    fake.reply("GET", f"/v1/invoices/{INVOICE}", basil_invoice())

    report = data(cli("sync", "--json"))

    assert (report["events_applied"], report["alerts_opened"]) == (1, 1)
    [lookup] = fake.requests_to("GET", "/v1/invoice_payments")
    assert lookup.query["payment[type]"] == "payment_intent"
    assert lookup.query["payment[payment_intent]"] == INTENT
    (alert,) = store.list_alerts(AlertQuery(statuses=None, limit=None))
    assert (alert.type, alert.invoice_id) == ("invoice_failed", INVOICE)
    assert alert.last_failure == "stolen_card: Your card was declined."
    assert store.get_invoice(INVOICE).last_decline_code == "stolen_card"


def test_a_charge_of_an_older_api_version_names_its_invoice(fake: FakeStripe, store: Any) -> None:
    fake.paginate(
        "/v1/events",
        [
            event(
                "evt_3QpL8ILkdIwHu7ixCh4rGe5b", "charge.failed", failed_charge(invoice=INVOICE), T0
            )
        ],
    )
    fake.reply("GET", f"/v1/invoices/{INVOICE}", full_invoice(INVOICE))

    data(cli("sync", "--json"))

    mirrored = store.get_invoice(INVOICE)
    assert (mirrored.last_decline_code, mirrored.last_failure_payment_method) == (
        "expired_card",
        CARD,
    )
    assert fake.requests_to("GET", "/v1/invoice_payments") == []


def test_a_payment_no_invoice_asked_for_is_not_ours(fake: FakeStripe, store: Any) -> None:
    fake.paginate(
        "/v1/events",
        [event("evt_3QpL8ILkdIwHu7ixCh4rGe5b", "charge.failed", failed_charge(invoice=None), T0)],
    )
    fake.reply("GET", "/v1/invoice_payments", list_page([], "/v1/invoice_payments", False))

    report = data(cli("sync", "--json"))

    assert (report["events_skipped"], report["alerts_opened"]) == (1, 0)
    assert store.get_invoice(INVOICE) is None


def test_an_intent_stripe_no_longer_has_leaves_the_failure_as_it_came(
    fake: FakeStripe, store: Any
) -> None:
    fake.paginate(
        "/v1/events",
        [event("evt_1QpL8ILkdIwHu7ixPf2aLd0B", "invoice.payment_failed", basil_invoice(), T0)],
    )
    fake.reply("GET", f"/v1/payment_intents/{INTENT}", not_found("payment_intent", INTENT))

    assert data(cli("sync", "--json"))["alerts_opened"] == 1
    mirrored = store.get_invoice(INVOICE)
    assert (mirrored.last_decline_code, mirrored.last_failure_message) == (
        None,
        "payment attempt 1 failed",
    )


def test_without_a_key_a_payment_event_from_a_file_is_recorded_and_skipped(
    store: Any, tmp_path: Path
) -> None:
    path = tmp_path / "events.json"
    path.write_text(
        json.dumps(
            [
                event(
                    "evt_3QpL8ILkdIwHu7ix1Xr2pQ9a",
                    "payment_intent.payment_failed",
                    declined_intent(),
                    T0,
                )
            ]
        )
    )
    report = data(cli("sync", "--events-file", str(path), "--json"))
    assert (report["events_seen"], report["events_skipped"]) == (1, 1)


def test_the_intents_failure_and_the_invoices_in_one_second_in_either_order(
    fake: FakeStripe, store: Any
) -> None:
    # Stripe sends payment_intent.payment_failed and invoice.payment_failed for the same
    # attempt in the same second; the invoice's carries no decline (it names no payment
    # here). Whichever comes first, and whatever their ids, the decline stays.
    serve_invoice_payments(fake)
    fake.reply("GET", f"/v1/invoices/{INVOICE}", full_invoice(INVOICE))
    events = [
        event(
            "evt_3QpL8ILkdIwHu7ixZzPiFail", "payment_intent.payment_failed", declined_intent(), T0
        ),
        event("evt_1QpL8ILkdIwHu7ixAaInFail", "invoice.payment_failed", full_invoice(INVOICE), T0),
    ]
    seen = []
    for order in (events, events[::-1]):
        wipe(store)
        gateway = open_gateway(load_settings())
        apply_events(store, order, source="api", now=NOW, gateway=lambda opened=gateway: opened)
        mirrored = store.get_invoice(INVOICE)
        seen.append(
            (mirrored.last_decline_code, mirrored.last_failure_message, mirrored.attempt_count)
        )
    assert seen == [("stolen_card", "Your card was declined.", 1)] * 2


def test_an_invoice_paid_since_is_not_settled_by_the_payments_failure(
    fake: FakeStripe, store: Any
) -> None:
    # A sync replays an old payment_intent.payment_failed; the invoice Stripe has now is
    # paid. The failure is recorded, and only invoice.paid names the settlement.
    paid_now = full_invoice(INVOICE, status="paid")
    fake.paginate(
        "/v1/events",
        [
            event(
                "evt_3QpL8ILkdIwHu7ix1Xr2pQ9a",
                "payment_intent.payment_failed",
                declined_intent(),
                T0,
            ),
            event("evt_1QpL8ILkdIwHu7ixPd5dOg3E", "invoice.paid", paid_now, T0 + 86400),
        ],
    )
    serve_invoice_payments(fake)
    fake.reply("GET", f"/v1/invoices/{INVOICE}", paid_now)

    data(cli("sync", "--json"))

    mirrored = store.get_invoice(INVOICE)
    assert (mirrored.status, mirrored.last_decline_code) == ("paid", "stolen_card")
    # Nothing to act on: no alert is opened for a failure Stripe already shows paid, and
    # none claims to be resolved by the PaymentIntent's event.
    assert store.list_alerts(AlertQuery(statuses=None, limit=None)) == []
    settled = store._execute(
        "SELECT settled_event_id FROM billing_invoices WHERE id = ?", (INVOICE,)
    ).fetchone()
    assert settled[0] == "evt_1QpL8ILkdIwHu7ixPd5dOg3E"
