"""A store filled through the CLI itself, with ids of real length, for the listing tests:
three failed invoices (alerts, dunning steps), one quarantined event, and ledger entries
that leave two customers' totals far off Stripe's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time

from tests.cli.helpers import run
from tests.sync.conftest import T0, event, full_invoice

INVOICES = {
    "in_1QpL8HLkdIwHu7ixl4OzzPMv": ("cus_Qf3kZ8aB1cD2eF3gH4iJ5kL", 149000),
    "in_1QpM2kLkdIwHu7ixR8vYtQ3e": ("cus_Rk7mT2xW9pL4nB6vC1dF8hJ", 1234567),
    "in_1QpN5sLkdIwHu7ixZ0pWcK7h": ("cus_Ts4bN8qZ3wE7rY1uI5oP2aS", 990),
}
BAD_EVENT = "evt_1QpL8ILkdIwHu7ixAbCdEf01"
NOW = datetime.fromtimestamp(T0 + 2 * 3600, UTC)  # 2026-05-28 22:26 UTC


@pytest.fixture
def seeded(store_env: str, tmp_path: Path) -> Iterator[None]:
    """Three failed invoices (alerts, dunning steps), one quarantined event, and ledger
    entries that leave one customer's totals far off Stripe's."""
    events = [
        event(
            f"evt_1QpL8ILkdIwHu7ixAbCdEf{n:02d}",
            "invoice.payment_failed",
            full_invoice(invoice_id, customer=customer_id, amount=amount),
            T0 - 600 + n,
        )
        for n, (invoice_id, (customer_id, amount)) in enumerate(INVOICES.items(), start=2)
    ]
    broken = full_invoice("in_1QpP9tLkdIwHu7ixBroKen01")
    broken["amount_due"] = [1]
    events.append(event(BAD_EVENT, "invoice.payment_failed", broken, T0 - 60))
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(item) + "\n" for item in events))
    with freeze_time(NOW):
        assert run("sync", "--events-file", str(path)).exit_code == 4  # one is quarantined
        for invoice_id, (customer_id, amount) in INVOICES.items():
            recorded = run(
                "ledger", "add", "--customer", customer_id, "--kind", "subscription",
                "--amount", f"{amount / 100 - (5 if amount > 100000 else 0):.2f}",
                "--invoice", invoice_id, "--description", "monthly plan, recorded by the app",
                "--occurred-at", "2026-05-28T19:00:00Z",
            )  # fmt: skip
            assert recorded.exit_code == 0, recorded.stderr
        yield
