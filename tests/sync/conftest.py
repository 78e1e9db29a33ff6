"""Stripe-shaped objects for the sync tests (hand-written, in the current API shape)."""

from __future__ import annotations

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
