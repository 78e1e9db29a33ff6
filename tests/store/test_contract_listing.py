"""The store contract for listings: the filters of each list command, and the counts that
let it say how many rows ``--limit`` left out (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cloudgreet_billing.adapters.store.protocol import LedgerQuery
from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.domain.alerts import AlertDraft
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.ledger import make_draft
from cloudgreet_billing.domain.quarantine import reject

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
CUSTOMERS = ("cus_Qf3kZ8aB1cD2eF3gH4iJ5kL", "cus_Rk7mT2xW9pL4nB6vC1dF8hJ")


def invoice_id(n: int) -> str:
    return f"in_1QpL8HLkdIwHu7ixl4Ozz{n:04d}"


def raise_alerts(store: Any) -> None:
    """Six alerts, a day apart, alternating customers; the last two on one invoice."""
    for n in range(6):
        invoice = invoice_id(min(n, 4))
        alert_type = "invoice_failed" if n != 5 else "dunning_exhausted"
        store.raise_alert(
            AlertDraft(
                type=alert_type,
                dedupe_key=f"{alert_type}:{invoice}",
                customer_id=CUSTOMERS[n % 2],
                invoice_id=invoice,
                amount_due=149000,
                currency="usd",
            ),
            actor="tester",
            now=NOW + timedelta(days=n),
        )


def test_alerts_filter_by_customer_invoice_and_opening_time(store: Any) -> None:
    raise_alerts(store)
    every = AlertQuery(statuses=None, limit=None)
    assert len(store.list_alerts(every)) == store.count_alerts(every) == 6
    first = AlertQuery(statuses=None, customer_id=CUSTOMERS[0], limit=None)
    assert [a.created_at.day for a in store.list_alerts(first)] == [28, 26, 24]
    assert store.count_alerts(first) == 3
    one_invoice = AlertQuery(statuses=None, invoice_id=invoice_id(4), limit=None)
    assert [a.type for a in store.list_alerts(one_invoice)] == [
        "dunning_exhausted",
        "invoice_failed",
    ]
    window = AlertQuery(
        statuses=None, since=NOW + timedelta(days=1), until=NOW + timedelta(days=3), limit=None
    )
    assert [a.created_at.day for a in store.list_alerts(window)] == [26, 25]
    assert store.count_alerts(window) == 2


def test_counting_alerts_ignores_the_limit(store: Any) -> None:
    raise_alerts(store)
    capped = AlertQuery(statuses=("open",), types=("invoice_failed",), limit=2)
    assert len(store.list_alerts(capped)) == 2
    assert store.count_alerts(capped) == 5


def test_steps_filter_by_customer_and_due_time_and_are_counted(store: Any) -> None:
    planner = TimelinePlanner()
    for n in range(4):
        store.schedule_steps(
            planner(
                invoice_id=invoice_id(n),
                customer_id=CUSTOMERS[n % 2],
                alert_id=None,
                first_failed_at=NOW + timedelta(hours=n),
            ),
            NOW,
        )
    assert store.count_steps() == 12
    mine = store.list_steps(customer_id=CUSTOMERS[1], limit=None)
    assert {step.invoice_id for step in mine} == {invoice_id(1), invoice_id(3)}
    assert store.count_steps(customer_id=CUSTOMERS[1]) == 6
    # Day 0 steps are due at the first failure: the first two hours hold invoices 0 and 1.
    early = {"since": NOW, "until": NOW + timedelta(hours=2)}
    assert [(s.invoice_id, s.day) for s in store.list_steps(**early, limit=None)] == [
        (invoice_id(0), 0),
        (invoice_id(1), 0),
    ]
    assert store.count_steps(**early) == 2
    assert len(store.list_steps(limit=5)) == 5
    assert store.count_steps(statuses=("scheduled",), invoice_id=invoice_id(2)) == 3


def test_ledger_entries_are_counted_with_the_query_filters(store: Any) -> None:
    for day in range(1, 6):
        store.record_ledger_entry(
            make_draft(
                customer_id=CUSTOMERS[day % 2],
                kind="booking_fee",
                amount="2.50",
                currency="usd",
                occurred_at=f"2026-11-0{day}T10:00:00Z",
            ),
            NOW,
        )
    assert store.count_ledger(LedgerQuery(limit=1)) == 5
    assert store.count_ledger(LedgerQuery(customer_id=CUSTOMERS[0])) == 2
    window = LedgerQuery(
        since=datetime(2026, 11, 2, tzinfo=UTC), until=datetime(2026, 11, 4, tzinfo=UTC)
    )
    assert store.count_ledger(window) == len(store.list_ledger(window)) == 2


def test_quarantined_events_are_counted_by_status(store: Any) -> None:
    rejected = [
        reject({"id": f"evt_1QpL8ILkdIwHu7ixAbCdEf{n:02d}"}, "no type", "file") for n in range(3)
    ]
    store.apply_event_plans([], planner=TimelinePlanner(), now=NOW, rejected=rejected)
    first = store.list_quarantined()[0]
    store.dismiss_quarantined(first.id, reason="a fixture", actor="tester", now=NOW)
    assert store.count_quarantined() == 2
    assert store.count_quarantined(("dismissed",)) == 1
    assert store.count_quarantined(None) == 3
