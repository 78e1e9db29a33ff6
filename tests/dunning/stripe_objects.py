"""Whole Stripe objects, hand-written in the current API shape, for the dunning tests.

An invoice carries what Stripe copies onto it when it is finalized (``customer_email``,
``customer_phone``, ``customer_name``; any may be null) and ``status_transitions``; events
are webhook deliveries of those objects, several in the same second.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

INVOICE_ID = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
CUSTOMER_ID = "cus_RkS5AtmBK5hCeq"
SUBSCRIPTION_ID = "sub_1QpL7wLkdIwHu7ixmD2ZbV4q"


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def invoice_object(
    *,
    invoice_id: str = INVOICE_ID,
    customer_id: str = CUSTOMER_ID,
    status: str = "open",
    finalized_at: datetime,
    email: str | None = "ops@brightsmile-dental.example",
    phone: str | None = "+14155550123",
    name: str | None = "Bright Smile Dental",
    amount: int = 14900,
    attempt_count: int = 1,
) -> dict[str, Any]:
    """An invoice as a webhook delivers it: every field Stripe sends, nulls included."""
    created = unix(finalized_at) - 3600
    paid = status == "paid"
    return {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "CloudGreet",
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "amount_shipping": 0,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "auto_advance": not paid,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer_id,
        "customer_address": None,
        "customer_email": email,
        "customer_name": name,
        "customer_phone": phone,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": unix(finalized_at),
        "ending_balance": 0,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1Nv0FGLkdIwHu7ix/{invoice_id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_1Nv0FGLkdIwHu7ix/{invoice_id}/pdf",
        "last_finalization_error": None,
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else unix(finalized_at) + 3 * 86400,
        "number": "CG-7F3A-0042",
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": SUBSCRIPTION_ID},
            "type": "subscription_details",
        },
        "period_end": created,
        "period_start": created - 30 * 86400,
        "receipt_number": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": unix(finalized_at),
            "marked_uncollectible_at": None,
            "paid_at": unix(finalized_at) + 7200 if paid else None,
            "voided_at": None,
        },
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "test_clock": None,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_taxes": [],
        "webhooks_delivered_at": unix(finalized_at),
    }


def customer_object(
    *,
    customer_id: str = CUSTOMER_ID,
    email: str | None = "billing@brightsmile-dental.example",
    phone: str | None = "+14155550199",
    name: str | None = "Bright Smile Dental LLC",
) -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": 1_735_000_000,
        "currency": "usd",
        "default_source": None,
        "delinquent": True,
        "description": None,
        "email": email,
        "invoice_prefix": "7F3A",
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": "pm_1QpL6qLkdIwHu7ixr2mXq9Ze",
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": name,
        "next_invoice_sequence": 43,
        "phone": phone,
        "preferred_locales": ["en-US"],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def event(event_id: str, event_type: str, obj: dict[str, Any], at: datetime) -> dict[str, Any]:
    """A webhook delivery (``evt_`` ids of real length, 28 characters)."""
    assert len(event_id) == 28, event_id
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": unix(at),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def ndjson(*events: dict[str, Any]) -> str:
    """Events one per line, as ``stripe listen --print-json`` prints them."""
    return "".join(json.dumps(item) + "\n" for item in events)
