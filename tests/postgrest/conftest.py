"""Shared setup for the stand-in's own tests: a small billing-shaped schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

INVOICES = """
CREATE TABLE invoices (
    id           text PRIMARY KEY CHECK (id LIKE 'in\\_%'),
    customer_id  text NOT NULL,
    amount_due   bigint NOT NULL CHECK (amount_due >= 0),
    currency     text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status       text NOT NULL,
    due_at       timestamptz,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT '2026-11-24T12:00:00Z'
);
"""


def invoice_id(n: int) -> str:
    """An id of Stripe's real length (27 characters)."""
    return f"in_1QpL8HLkdIwHu7ix{n:08d}"


@pytest.fixture
def invoices(postgrest: Any) -> Any:
    """The stand-in with an ``invoices`` table of 5 rows (one with a NULL due date)."""
    postgrest.sql(INVOICES)
    rows = [
        (invoice_id(1), "cus_Qa1", 1500, "usd", "open", "2026-11-20T00:00:00Z"),
        (invoice_id(2), "cus_Qa1", 9900, "usd", "paid", "2026-11-21T00:00:00Z"),
        (invoice_id(3), "cus_Qb2", 250, "eur", "open", None),
        (invoice_id(4), "cus_Qb2", 0, "eur", "void", "2026-11-23T00:00:00Z"),
        (invoice_id(5), "cus_Qc3", 120000, "jpy", "uncollectible", "2026-11-24T00:00:00Z"),
    ]
    for row in rows:
        postgrest.sql(
            "INSERT INTO invoices (id, customer_id, amount_due, currency, status, due_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            row,
        )
    return postgrest


def rest(
    standin: Any,
    method: str,
    path: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """A raw request to ``/rest/v1``, for what the client hides (status, headers)."""
    key = standin.keys.secret if key is None else key
    sent = {"apikey": key, "Authorization": f"Bearer {key}"} if key else {}
    sent.update(headers or {})
    with httpx.Client(timeout=10) as http:
        return http.request(method, f"{standin.rest_url}{path}", headers=sent, **kwargs)
