"""The store contract: every implementation must pass this suite (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
from cloudgreet_billing.adapters.store.protocol import TABLES, AuditDraft, LedgerQuery
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.ledger import make_draft
from cloudgreet_billing.domain.ledger_batch import batches_of
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice, parse_subscription
from cloudgreet_billing.errors import BadInput

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def draft(**overrides: object):
    values = {
        "customer_id": "cus_A",
        "kind": "booking_fee",
        "amount": "2.50",
        "currency": "usd",
        "occurred_at": "2026-11-20T10:00:00Z",
    }
    values.update(overrides)
    return make_draft(**values)  # type: ignore[arg-type]


def test_schema_is_current_and_migrate_is_idempotent(store):
    assert store.schema_version() == LATEST_SCHEMA_VERSION
    assert store.migrate() == []
    assert store.schema_version() == LATEST_SCHEMA_VERSION
    assert set(store.row_counts()) == set(TABLES)


def test_record_ledger_entry_round_trips_every_field(store):
    entry, created = store.record_ledger_entry(
        draft(invoice_id="in_1", description="3 bookings", external_id="ext-1"), NOW
    )
    assert created
    assert (entry.customer_id, entry.kind, entry.amount, entry.currency) == (
        "cus_A",
        "booking_fee",
        250,
        "usd",
    )
    assert entry.occurred_at == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert entry.occurred_at.tzinfo is not None
    assert (entry.invoice_id, entry.description, entry.external_id) == (
        "in_1",
        "3 bookings",
        "ext-1",
    )
    assert entry.created_at == NOW
    assert store.list_ledger(LedgerQuery()) == [entry]


def test_same_external_id_is_recorded_once(store):
    first, created_first = store.record_ledger_entry(draft(external_id="ext-1"), NOW)
    again, created_again = store.record_ledger_entry(draft(external_id="ext-1"), NOW)
    assert created_first and not created_again
    assert again == first
    assert store.row_counts()["billing_usage_ledger"] == 1


def test_entries_without_external_id_are_all_recorded(store):
    store.record_ledger_entry(draft(), NOW)
    store.record_ledger_entry(draft(), NOW)
    assert store.row_counts()["billing_usage_ledger"] == 2


def test_list_filters_and_orders_newest_first(store):
    for day, customer, kind in [
        (1, "cus_A", "booking_fee"),
        (2, "cus_B", "booking_fee"),
        (3, "cus_A", "subscription"),
        (4, "cus_A", "booking_fee"),
    ]:
        store.record_ledger_entry(
            draft(customer_id=customer, kind=kind, occurred_at=f"2026-11-0{day}"), NOW
        )
    days = [e.occurred_at.day for e in store.list_ledger(LedgerQuery())]
    assert days == [4, 3, 2, 1]
    only_a_fees = store.list_ledger(LedgerQuery(customer_id="cus_A", kind="booking_fee"))
    assert [e.occurred_at.day for e in only_a_fees] == [4, 1]
    window = store.list_ledger(
        LedgerQuery(
            since=datetime(2026, 11, 2, tzinfo=UTC), until=datetime(2026, 11, 4, tzinfo=UTC)
        )
    )
    assert [e.occurred_at.day for e in window] == [3, 2]
    assert len(store.list_ledger(LedgerQuery(limit=2))) == 2


def test_import_counts_new_and_duplicate_rows(store):
    store.record_ledger_entry(draft(external_id="x1"), NOW)
    rows = [draft(external_id="x1"), draft(external_id="x2"), draft(external_id="x2"), draft()]
    outcome = store.import_ledger(batches_of(rows, size=2), NOW)
    assert (outcome.inserted, outcome.duplicates) == (2, 2)
    assert store.row_counts()["billing_usage_ledger"] == 3


def test_import_is_all_or_nothing_when_the_rows_fail_midway(store):
    def rows():
        yield draft(external_id="a")
        yield draft(external_id="b")
        raise BadInput("line 3: broken")

    with pytest.raises(BadInput):
        store.import_ledger(batches_of(rows(), size=1), NOW)
    assert store.row_counts()["billing_usage_ledger"] == 0
    # The store is still usable after the rollback.
    store.record_ledger_entry(draft(), NOW)
    assert store.row_counts()["billing_usage_ledger"] == 1


def test_import_of_many_rows_spans_batches(store):
    outcome = store.import_ledger(
        batches_of(draft(external_id=f"e{i}") for i in range(12_001)), NOW
    )
    assert outcome.inserted == 12_001
    assert store.row_counts()["billing_usage_ledger"] == 12_001


def test_audit_trail_is_per_target_and_oldest_first(store):
    store.append_audit(AuditDraft("ann", "retry", "in_1", "intent", "key-1", {"amount": 5}), NOW)
    store.append_audit(AuditDraft("ann", "retry", "in_2", "intent"), NOW)
    store.append_audit(
        AuditDraft("ann", "retry", "in_1", "paid", "key-1"), NOW + timedelta(seconds=1)
    )
    trail = store.audit_trail("in_1")
    assert [(a.outcome, a.idempotency_key) for a in trail] == [
        ("intent", "key-1"),
        ("paid", "key-1"),
    ]
    assert trail[0].details == {"amount": 5}
    assert trail[0].occurred_at == NOW


def test_settings_hold_json_values(store):
    assert store.get_setting("dunning.pause") is None
    store.put_setting("dunning.pause", {"reason": "Stripe outage", "by": "ann"}, "ann", NOW)
    assert store.get_setting("dunning.pause") == {"reason": "Stripe outage", "by": "ann"}
    store.put_setting("dunning.pause", None, "ann", NOW)
    assert store.get_setting("dunning.pause") is None
    store.put_setting("sync.cursor", "evt_123", "cron", NOW)
    assert store.get_setting("sync.cursor") == "evt_123"


INVOICE = {
    "id": "in_1",
    "object": "invoice",
    "customer": "cus_A",
    "status": "open",
    "currency": "usd",
    "created": 1_763_000_000,
    "amount_due": 4900,
    "total": 4900,
    "total_excluding_tax": 4500,
    "attempt_count": 1,
    "hosted_invoice_url": "https://invoice.stripe.com/i/acct/test",
    "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1"}},
}


def test_mirror_keeps_the_newest_state_and_never_reopens_a_settled_invoice(store):
    t1, t2, t3 = (NOW + timedelta(minutes=m) for m in (1, 2, 3))
    assert store.upsert_invoice(parse_invoice(INVOICE), t2, NOW)
    older = parse_invoice({**INVOICE, "amount_due": 5900})
    assert not store.upsert_invoice(older, t1, NOW), "an older state must not win"
    paid = parse_invoice({**INVOICE, "status": "paid", "amount_paid": 4900})
    # The status only moves forward (domain.merge): a settled state wins even when it was
    # observed first, since Stripe never reopens a paid invoice.
    assert store.upsert_invoice(paid, t1, NOW)
    assert not store.upsert_invoice(parse_invoice(INVOICE), t3, NOW), "paid must stay paid"
    mirrored = store.get_invoice("in_1")
    assert mirrored is not None
    assert (mirrored.status, mirrored.amount_paid, mirrored.subscription_id) == (
        "paid",
        4900,
        "sub_1",
    )
    assert mirrored.invoiced_amount == 4500
    assert mirrored.raw["hosted_invoice_url"] == INVOICE["hosted_invoice_url"]


def test_uncollectible_invoice_may_still_be_paid(store):
    store.upsert_invoice(parse_invoice({**INVOICE, "status": "uncollectible"}), NOW, NOW)
    assert store.upsert_invoice(parse_invoice({**INVOICE, "status": "paid"}), NOW, NOW)
    assert store.get_invoice("in_1").status == "paid"


def test_mirror_customers_and_subscriptions(store):
    customer = {
        "id": "cus_A",
        "email": "a@example.com",
        "phone": "+15550100",
        "created": 1_780_000_000,
    }
    assert store.upsert_customer(parse_customer(customer), NOW, NOW)
    assert store.get_customer("cus_A").phone == "+15550100"
    subscription = {
        "id": "sub_1",
        "customer": "cus_A",
        "status": "active",
        "currency": "usd",
        "created": 1_780_000_000,
        "items": {"data": [{"current_period_end": 1_765_000_000, "price": {"currency": "usd"}}]},
    }
    assert store.upsert_subscription(parse_subscription(subscription), NOW, NOW)
    mirrored = store.get_subscription("sub_1")
    assert mirrored is not None and mirrored.current_period_end is not None
    assert store.get_invoice("in_missing") is None


def test_dunning_schedules_once_and_cancels_pending(store):
    # Through the protocol (which the SQL stores run through their event-processing seam,
    # _schedule_steps_in_tx and _cancel_pending_steps_in_tx), so every backend answers it.
    planner = TimelinePlanner()
    steps = planner(invoice_id="in_1", customer_id="cus_A", alert_id=None, first_failed_at=NOW)
    assert store.schedule_steps(steps, NOW) == 3
    assert store.schedule_steps(steps, NOW) == 0
    assert store.cancel_pending_steps("in_1", "invoice paid", NOW) == 3
    assert store.cancel_pending_steps("in_1", "invoice paid", NOW) == 0
    assert store.row_counts()["billing_dunning_events"] == 3
    assert {step.status for step in store.list_steps(statuses=None, limit=None)} == {"canceled"}
