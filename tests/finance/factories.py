"""Stripe-shaped objects for the finance tests, written by hand (never copied fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: Every finance test runs "now" at this moment (freezegun), so windows are exact.
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def invoice(
    invoice_id: str,
    customer: str,
    *,
    total: int,
    total_excluding_tax: int | None = None,
    status: str = "paid",
    currency: str = "usd",
    created: datetime = datetime(2026, 11, 20, tzinfo=UTC),
    due_date: datetime | None = None,
    attempt_count: int = 0,
    amount_remaining: int | None = None,
    lines: list[dict[str, Any]] | None = None,
    lines_has_more: bool = False,
) -> dict[str, Any]:
    """An invoice as the API returns it (only the fields we read, plus a few more)."""
    body: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "status": status,
        "currency": currency,
        "total": total,
        "subtotal": total,
        "amount_due": total,
        "amount_paid": total if status == "paid" else 0,
        "amount_remaining": (0 if status == "paid" else total)
        if amount_remaining is None
        else amount_remaining,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "created": unix(created),
        "due_date": None if due_date is None else unix(due_date),
        "livemode": False,
        "number": f"NUM-{invoice_id[3:]}",
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
        "lines": {
            "object": "list",
            "data": lines or [],
            "has_more": lines_has_more,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
    }
    if total_excluding_tax is not None:
        body["total_excluding_tax"] = total_excluding_tax
    return body


def line(line_id: str, amount: int, description: str, currency: str = "usd") -> dict[str, Any]:
    return {
        "id": line_id,
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": description,
    }


def price(
    unit_amount: int | None,
    *,
    currency: str = "usd",
    interval: str = "month",
    interval_count: int = 1,
    usage_type: str = "licensed",
    tax_behavior: str = "exclusive",
) -> dict[str, Any]:
    return {
        "id": f"price_{interval}{interval_count}_{unit_amount}",
        "object": "price",
        "currency": currency,
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
        "billing_scheme": "per_unit",
        "tax_behavior": tax_behavior,
        "type": "recurring",
        "recurring": {
            "interval": interval,
            "interval_count": interval_count,
            "usage_type": usage_type,
            "meter": None,
        },
    }


def item(item_price: dict[str, Any], quantity: int | None = 1, **extra: Any) -> dict[str, Any]:
    body = {"id": f"si_{item_price['id']}", "object": "subscription_item", "price": item_price}
    if quantity is not None:
        body["quantity"] = quantity
    body.update(extra)
    return body


def coupon(
    *,
    duration: str = "forever",
    percent_off: float | None = None,
    amount_off: int | None = None,
    currency: str | None = None,
    duration_in_months: int | None = None,
) -> dict[str, Any]:
    return {
        "id": f"co_{duration}_{percent_off}_{amount_off}",
        "object": "coupon",
        "duration": duration,
        "percent_off": percent_off,
        "amount_off": amount_off,
        "currency": currency,
        "duration_in_months": duration_in_months,
        "valid": True,
    }


def discount(
    the_coupon: dict[str, Any], *, start: datetime | None = None, end: datetime | None = None
) -> dict[str, Any]:
    """A discount in the 2025 shape: the coupon under ``source``."""
    return {
        "id": f"di_{the_coupon['id']}",
        "object": "discount",
        "source": {"type": "coupon", "coupon": the_coupon},
        "start": unix(start or datetime(2026, 1, 1, tzinfo=UTC)),
        "end": None if end is None else unix(end),
    }


def subscription(
    sub_id: str,
    items: list[dict[str, Any]],
    *,
    status: str = "active",
    customer: str = "cus_A",
    currency: str = "usd",
    discounts: list[Any] | None = None,
    cancel_at_period_end: bool = False,
    current_period_end: datetime = datetime(2026, 12, 1, tzinfo=UTC),
    pause_collection: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "currency": currency,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": None,
        "ended_at": None,
        "pause_collection": pause_collection,
        "discounts": discounts or [],
        "created": unix(datetime(2026, 1, 1, tzinfo=UTC)),
        "livemode": False,
        "items": {
            "object": "list",
            "has_more": False,
            "data": [{**entry, "current_period_end": unix(current_period_end)} for entry in items],
        },
    }
    body.update(extra)
    return body
