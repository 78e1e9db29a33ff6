"""Stripe-shaped objects for the sync tests (hand-written, in the current API shape)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stripe_fake import FakeStripe, fake_stripe  # noqa: F401 (fixture)

T0 = 1_780_000_000  # 2026-05-28T20:26:40Z


def invoice(
    invoice_id: str = "in_1",
    *,
    status: str = "open",
    customer: str = "cus_1",
    amount: int = 4900,
    attempt_count: int = 1,
    created: int = T0 - 3600,
    subscription: str | None = "sub_1",
    legacy_shape: bool = False,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "status": status,
        "currency": "usd",
        "amount_due": amount,
        "amount_paid": amount if status == "paid" else 0,
        "amount_remaining": 0 if status == "paid" else amount,
        "total": amount,
        "total_excluding_tax": amount,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "created": created,
        "livemode": False,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
    }
    if legacy_shape:
        obj["subscription"] = subscription
    else:
        obj["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"metadata": {}, "subscription": subscription},
        }
    return obj


def subscription(sub_id: str = "sub_1", *, status: str = "active", created: int = T0 - 86400):
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": "cus_1",
        "status": status,
        "currency": "usd",
        "created": created,
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [{"current_period_end": T0 + 86400 * 20}]},
        "livemode": False,
    }


def customer(
    customer_id: str = "cus_1",
    *,
    email: str | None = "owner@example.com",
    phone: str | None = "+15550001111",
    created: int = T0 - 86400 * 30,
) -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "email": email,
        "name": "Owner",
        "phone": phone,
        "created": created,
        "livemode": False,
    }


def event(event_id: str, event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": False,
        "api_version": "2026-10-28.endive",
        "data": {"object": obj},
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }


def failed(event_id: str, invoice_id: str, attempt: int, created: int) -> dict[str, Any]:
    return event(
        event_id,
        "invoice.payment_failed",
        invoice(invoice_id, attempt_count=attempt),
        created,
    )


def paid(event_id: str, invoice_id: str, created: int) -> dict[str, Any]:
    return event(event_id, "invoice.paid", invoice(invoice_id, status="paid"), created)


@pytest.fixture
def fake(fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> FakeStripe:  # noqa: F811
    """The fake Stripe, with the CLI pointed at it."""
    from tests.stripe_fake import stripe_env

    stripe_env(monkeypatch, fake_stripe)
    return fake_stripe


def full_invoice(
    invoice_id: str = "in_1QpL8HLkdIwHu7ixl4OzzPMv",
    *,
    customer: str = "cus_RiJ2m0yQbTgC4x",
    subscription: str = "sub_1QpL7xLkdIwHu7ixWq3bN2Zs",
    status: str = "open",
    amount: int = 12900,
    attempt_count: int = 1,
    created: int = T0 - 3600,
) -> dict[str, Any]:
    """An invoice as Stripe sends it in a webhook (API 2026-10-28): every field, nulls
    included, one subscription line; about 3 KB of JSON."""
    paid = status == "paid"
    return {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "CloudGreet Inc.",
        "account_tax_ids": None,
        "amount_due": amount,
        "amount_overpaid": 0,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "auto_advance": not paid,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "custom_fields": None,
        "customer": customer,
        "customer_account": None,
        "customer_address": None,
        "customer_email": "owner@brightsmiles.example",
        "customer_name": "Bright Smiles Dental",
        "customer_phone": "+15125550142",
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": created + 60,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1Nv0FGQ9RKHgCVdK/test_{invoice_id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_1Nv0FGQ9RKHgCVdK/test_{invoice_id}/pdf",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": "il_1QpL8HLkdIwHu7ixYb5cZk2T",
                    "object": "line_item",
                    "amount": amount,
                    "currency": "usd",
                    "description": "1 × CloudGreet Receptionist (at $129.00 / month)",
                    "discount_amounts": [],
                    "discountable": True,
                    "discounts": [],
                    "invoice": invoice_id,
                    "livemode": False,
                    "metadata": {},
                    "parent": {
                        "invoice_item_details": None,
                        "subscription_item_details": {
                            "invoice_item": None,
                            "proration": False,
                            "proration_details": {"credited_items": None},
                            "subscription": subscription,
                            "subscription_item": "si_RiJ2Xy6hQm1Abc",
                        },
                        "type": "subscription_item_details",
                    },
                    "period": {"end": created + 30 * 86400, "start": created},
                    "pretax_credit_amounts": [],
                    "pricing": {
                        "price_details": {
                            "price": "price_1QkP0ALkdIwHu7ixRecpt129",
                            "product": "prod_RdS9yH2mTq0Vn1",
                        },
                        "type": "price_details",
                        "unit_amount_decimal": str(amount),
                    },
                    "quantity": 1,
                    "taxes": [],
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else created + 3 * 86400,
        "number": "CG-0042-0007",
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription},
            "type": "subscription_details",
        },
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": created,
        "period_start": created - 30 * 86400,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": created + 60,
            "marked_uncollectible_at": None,
            "paid_at": created + 120 if paid else None,
            "voided_at": None,
        },
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "test_clock": None,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": created + 5,
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A migrated store on each backend, one per test module: every test here empties it
    first (``wipe``), so the database is made once rather than for each test."""
    from cloudgreet_billing.adapters.store.postgres import PostgresStore
    from cloudgreet_billing.adapters.store.sqlite import SqliteStore

    if request.param == "sqlite":
        store: Any = SqliteStore(tmp_path_factory.mktemp("order") / "billing.db")
        store.migrate()
        yield store
        store.close()
        return
    import psycopg

    server = request.getfixturevalue("postgres_server")
    name = f"billing_order_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    store = PostgresStore(f"{server.rpartition('/')[0]}/{name}")
    try:
        store.migrate()
        yield store
    finally:
        store.close()
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
