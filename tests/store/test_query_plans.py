"""Event statements find their rows by the invoice's key, however many steps the store holds.

SQLite plans without statistics (nothing runs ANALYZE on a user's store), and it would
walk every canceled step of every invoice in the status index to relabel one invoice's
steps: a cost that grew with the table, and made ``sync`` of 10,000 events several times
slower than it need be. Both stores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cloudgreet_billing.adapters.store.sql_mirror import (
    CANCEL_SETTLED_STEPS,
    RELABEL_CANCELED_STEPS,
    RELABEL_RESOLVED_ALERTS,
)
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.mirror import parse_invoice
from cloudgreet_billing.domain.statuses import PENDING_STATUSES
from tests.sync.conftest import full_invoice

NOW = datetime(2026, 5, 29, 9, 0, tzinfo=UTC)
INVOICES = 200


def plan_of(store: Any, statement: str, params: tuple[Any, ...]) -> str:
    """The store's query plan for ``statement``, as one text."""
    if store.backend == "sqlite":
        rows = store._execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
        return "\n".join(str(row[-1]) for row in rows)
    rows = store._execute(f"EXPLAIN {statement}", params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def seed_canceled_steps(store: Any) -> str:
    """Invoices that each failed and were paid: every step canceled. Returns one id."""
    ids = [f"in_1QpL8HLkdIwHu7ix{n:08d}" for n in range(INVOICES)]
    invoices = [parse_invoice(full_invoice(invoice_id)) for invoice_id in ids]
    store.upsert_invoices(invoices, NOW - timedelta(days=3), NOW)
    planner = TimelinePlanner()
    for invoice in invoices:
        steps = planner(
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            alert_id=None,
            first_failed_at=NOW - timedelta(days=3),
        )
        store.schedule_steps(steps, NOW)
        store.cancel_pending_steps(invoice.id, "invoice paid (evt_1QpL8ILkdIwHu7ixPa1d0001)", NOW)
    if store.backend == "postgres":
        # A production table has statistics (autovacuum analyzes it).
        store._execute("ANALYZE billing_dunning_events")
    return ids[INVOICES // 2]


def test_a_late_settlement_relabels_steps_by_the_invoice_not_by_status(sql_store: Any) -> None:
    store = sql_store
    invoice_id = seed_canceled_steps(store)
    assert len(store.list_steps(limit=None)) >= 2 * INVOICES

    relabel = ("invoice paid (evt_1QpL8ILkdIwHu7ixPa1d0000)", NOW, invoice_id, invoice_id)
    plans = {
        "relabel steps": plan_of(
            store, RELABEL_CANCELED_STEPS, (*relabel, NOW, "evt_1QpL8ILkdIwHu7ixPa1d0000")
        ),
        "relabel alerts": plan_of(
            store, RELABEL_RESOLVED_ALERTS, (*relabel, NOW, "evt_1QpL8ILkdIwHu7ixPa1d0000")
        ),
    }
    if store.backend == "sqlite":
        # PostgreSQL's statistics know that steps still pending are few here, and rightly
        # look them up by status; SQLite, with none, must go by the invoice.
        plans["cancel steps"] = plan_of(
            store, CANCEL_SETTLED_STEPS, (invoice_id, NOW, invoice_id, *PENDING_STATUSES)
        )
    for name, plan in plans.items():
        assert "status_idx" not in plan, f"{name} walks the status index:\n{plan}"
