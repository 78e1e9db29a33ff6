"""A bad event is quarantined in its batch; the events around it are applied. Both stores."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.quarantine import reject_text
from cloudgreet_billing.errors import Unavailable
from cloudgreet_billing.services import quarantine
from cloudgreet_billing.services.events import UnreadableValue
from cloudgreet_billing.services.sync import apply_events
from tests.sync.conftest import T0, event, failed, full_invoice, paid

NOW = datetime(2026, 5, 29, 9, 0, tzinfo=UTC)


def run(store: Any, events: list[Any], **kwargs: Any) -> Any:
    return apply_events(store, events, source="file", now=NOW, **kwargs)


def invoice_event(n: int, *, event_type: str = "invoice.payment_failed", **fields: Any) -> Any:
    obj = {**full_invoice(f"in_1QpL8HLkdIwHu7ix{n:08d}", created=T0 - 3600 + n), **fields}
    return event(f"evt_1QpL8ILkdIwHu7ix{n:08d}", event_type, obj, T0 + n)


def open_alerts(store: Any) -> list[Any]:
    return store.list_alerts(AlertQuery(limit=None))


def test_one_bad_event_among_300_is_quarantined_and_the_rest_applied(store: Any) -> None:
    events = [invoice_event(n) for n in range(300)]
    events[150]["data"]["object"]["amount_due"] = [1]
    report = run(store, events)

    assert (report.events_seen, report.events_applied, report.events_failed) == (300, 299, 1)
    assert len(open_alerts(store)) == 299
    assert store.get_invoice("in_1QpL8HLkdIwHu7ix00000150") is None
    (row,) = store.list_quarantined()
    assert (row.event_id, row.type, row.source, row.status, row.times_seen) == (
        "evt_1QpL8ILkdIwHu7ix00000150",
        "invoice.payment_failed",
        "file",
        "quarantined",
        1,
    )
    assert row.reason == (
        "invoice in_1QpL8HLkdIwHu7ix00000150 field amount_due: expected an integer, got list"
    )
    assert json.loads(row.payload) == events[150]
    assert row.stripe_created == datetime.fromtimestamp(T0 + 150, UTC)
    assert not store.event_processed("evt_1QpL8ILkdIwHu7ix00000150")
    assert report.failures == [f"evt_1QpL8ILkdIwHu7ix00000150: {row.reason}"]

    again = run(store, events)  # a rerun applies nothing twice and keeps one row
    assert (again.events_duplicate, again.events_failed) == (299, 1)
    (row,) = store.list_quarantined()
    assert row.times_seen == 2
    assert store.count_quarantined() == 1


def test_an_event_the_store_refuses_is_quarantined_and_its_batch_kept(store: Any) -> None:
    # A constraint of the store, not the parser: the fallback quarantines it in the same
    # transaction as the batch's other events.
    planner = TimelinePlanner()

    def planner_breaking_one(**kwargs: Any) -> list[Any]:
        from dataclasses import replace

        steps = planner(**kwargs)
        if kwargs["invoice_id"].endswith("00000002"):
            steps[0] = replace(steps[0], channel="fax")
        return steps

    events = [invoice_event(n) for n in range(5)]
    report = run(store, events, planner=planner_breaking_one)
    assert (report.events_applied, report.events_failed) == (4, 1)
    (row,) = store.list_quarantined()
    assert row.event_id == "evt_1QpL8ILkdIwHu7ix00000002"
    assert "check constraint" in row.reason.lower()
    assert store.get_invoice("in_1QpL8HLkdIwHu7ix00000002") is None  # rolled back alone

    result = quarantine.retry(store, row, planner=planner, now=NOW, actor="ops@example.com")
    assert (result.status, result.alerts_opened, result.dunning_scheduled) == ("applied", 1, 3)
    settled = store.get_quarantined(row.id)
    assert (settled.status, settled.resolved_by, settled.resolution) == (
        "applied",
        "ops@example.com",
        "applied by retry",
    )
    assert store.count_quarantined() == 0
    (audit,) = store.audit_trail(f"quarantine:{row.id}")
    assert (audit.actor, audit.action, audit.outcome) == (
        "ops@example.com",
        "quarantine.retry",
        "applied",
    )


def test_a_retry_that_still_fails_keeps_it_quarantined_with_the_new_reason(store: Any) -> None:
    bad = invoice_event(1, attempt_count="two")
    run(store, [bad])
    (row,) = store.list_quarantined()
    assert "field attempt_count: expected an integer, got string 'two'" in row.reason

    result = quarantine.retry(store, row, planner=TimelinePlanner(), now=NOW, actor="ops")
    assert result.status == "quarantined"
    assert store.get_quarantined(row.id).status == "quarantined"
    assert [r.outcome for r in store.audit_trail(f"quarantine:{row.id}")] == ["quarantined"]


def test_a_fixed_redelivery_settles_the_quarantine_row(store: Any) -> None:
    bad = invoice_event(1, currency="US")
    run(store, [bad])
    assert store.count_quarantined() == 1
    report = run(store, [invoice_event(1)])  # the same event id, as Stripe sends it
    assert report.events_applied == 1
    (row,) = store.list_quarantined(statuses=None)
    assert (row.status, row.resolution) == ("applied", "applied when delivered again")


def test_dismissing_keeps_the_row_and_audits(store: Any) -> None:
    run(store, [invoice_event(1, created="yesterday")])
    (row,) = store.list_quarantined()
    dismissed = store.dismiss_quarantined(
        row.id, reason="fixture from a test account", actor="ops", now=NOW
    )
    assert (dismissed.status, dismissed.resolution, dismissed.resolved_at) == (
        "dismissed",
        "fixture from a test account",
        NOW,
    )
    assert store.count_quarantined() == 0
    assert json.loads(dismissed.payload)["id"] == "evt_1QpL8ILkdIwHu7ix00000001"
    # A redelivery of a dismissed event does not bring it back.
    run(store, [invoice_event(1, created="yesterday")])
    assert store.get_quarantined(row.id).status == "dismissed"
    assert store.get_quarantined(row.id).times_seen == 2
    with pytest.raises(Exception, match="already dismissed"):
        store.dismiss_quarantined(row.id, reason=None, actor="ops", now=NOW)
    assert [r.action for r in store.audit_trail(f"quarantine:{row.id}")] == ["quarantine.dismiss"]


def test_events_without_a_usable_id_are_kept_once_by_their_payload(store: Any) -> None:
    no_prefix = {**invoice_event(1), "id": "1QpL8ILkdIwHu7ix00000001"}
    unreadable = UnreadableValue('{"id": "evt_x", "data": [[[[', 3, "not valid JSON near line 3")
    not_an_event = 42
    for _ in range(2):
        report = run(store, [invoice_event(0), no_prefix, unreadable, not_an_event])
    assert report.events_failed == 3
    rows = store.list_quarantined()
    assert [(r.event_id, r.times_seen) for r in rows] == [(None, 2)] * 3
    assert json.loads(rows[1].payload) == '{"id": "evt_x", "data": [[[['
    assert rows[2].reason == "found integer 42 where a Stripe event was expected"


def test_an_event_processed_before_is_not_quarantined_by_a_bad_copy(store: Any) -> None:
    run(store, [invoice_event(1)])
    report = run(store, [invoice_event(1, amount_due=True)])
    assert (report.events_duplicate, report.events_failed) == (1, 0)
    assert store.count_quarantined() == 0


def test_payloads_any_text_column_holds_nul_and_deep_nesting(store: Any) -> None:
    nul = invoice_event(1, number="CG\x00-1")
    deep: Any = "bottom"
    for _ in range(5000):
        deep = [deep]
    nested = invoice_event(2, metadata={"k": deep})
    rejected = reject_text("[" * 100_000, "JSON nested too deep to read near line 1", "file")
    report = run(store, [nul, nested, invoice_event(3)])
    (kept,) = store.apply_event_plans([], planner=TimelinePlanner(), now=NOW, rejected=[rejected])
    assert (report.events_applied, report.events_failed, kept.status) == (1, 2, "quarantined")
    by_event = {row.event_id: row for row in store.list_quarantined()}
    assert "field number: expected text without NUL characters" in by_event[nul["id"]].reason
    assert json.loads(by_event[nul["id"]].payload)["data"]["object"]["number"] == "CG\x00-1"
    # Too deep for json.dumps: kept whole all the same, written without recursion.
    assert by_event[nested["id"]].reason.startswith("RecursionError")
    assert '"k":' + "[" * 5000 + '"bottom"' + "]" * 5000 in by_event[nested["id"]].payload
    assert json.loads(by_event[None].payload) == "[" * 100_000


@contextmanager
def write_lock_held(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A store that waits at most a moment for its write lock, while another connection
    holds it: a fault of the store, which no event caused."""
    if database_url.startswith("sqlite"):
        from cloudgreet_billing.adapters.store.sqlite import SqliteStore

        path = Path(database_url.removeprefix("sqlite:///"))
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        store = SqliteStore(path, busy_timeout_ms=100)
        try:
            yield store
        finally:
            store.close()
            holder.execute("ROLLBACK")
            holder.close()
        return
    import psycopg

    from cloudgreet_billing.adapters.store.postgres import PostgresStore

    holder_conn = psycopg.connect(database_url)
    holder_conn.execute("LOCK TABLE billing_stripe_events IN EXCLUSIVE MODE")
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=200")
    store = PostgresStore(database_url)
    try:
        yield store
    finally:
        store.close()
        holder_conn.rollback()
        holder_conn.close()


def test_a_locked_store_is_unavailable_and_writes_nothing(
    store: Any, store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = store.row_counts()
    events = [invoice_event(1), invoice_event(2, amount_due=[1])]
    with write_lock_held(store_env, monkeypatch) as locked, pytest.raises(Unavailable) as caught:
        run(locked, events)
    assert caught.value.code == "store_unavailable"
    assert caught.value.exit_code == 75
    assert store.row_counts() == before  # nothing quarantined: the event was not at fault
    assert run(store, events).events_failed == 1  # and all goes through once it is free


def test_a_payment_event_after_a_quarantined_failure_still_resolves(store: Any) -> None:
    # The events around a bad one keep their meaning: a failure, a bad event, the payment.
    report = run(
        store,
        [
            failed("evt_1", "in_1", 1, T0),
            {**failed("evt_2", "in_1", 2, T0 + 1), "created": 2**70},
            paid("evt_3", "in_1", T0 + 2),
        ],
    )
    assert (report.alerts_opened, report.alerts_resolved, report.events_failed) == (1, 1, 1)
    assert store.get_invoice("in_1").status == "paid"


def test_a_plan_made_without_its_event_is_still_kept_under_its_own_id(store: Any) -> None:
    from dataclasses import replace

    from cloudgreet_billing.domain.events import plan_event

    def broken(**kwargs: Any) -> list[Any]:
        raise RuntimeError("planner down")

    plans = [replace(plan_event(invoice_event(n), "api"), event={}) for n in (1, 2)]
    results = store.apply_event_plans(plans, planner=broken, now=NOW)
    assert [r.status for r in results] == ["quarantined", "quarantined"]
    rows = store.list_quarantined()
    assert [(r.event_id, r.reason) for r in rows] == [
        ("evt_1QpL8ILkdIwHu7ix00000001", "RuntimeError: planner down"),
        ("evt_1QpL8ILkdIwHu7ix00000002", "RuntimeError: planner down"),
    ]


def test_only_a_store_fault_holds_the_events_api_cursor_back(
    store: Any, store_env: str, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches committed before the store failed keep the cursor they earned; a bad event
    never holds it (it moved past the quarantined one in the first batch)."""
    import psycopg

    from cloudgreet_billing.adapters.stripe import StripeGateway
    from cloudgreet_billing.services import sync

    events = [invoice_event(n) for n in range(1, 7)]
    events[1]["data"]["object"]["amount_due"] = "12900"
    fake.paginate("/v1/events", events)
    monkeypatch.setattr(sync, "BATCH_SIZE", 3)
    holder: list[Any] = []

    def lock_after_the_first_batch(done: int) -> None:
        # Another session takes the events table (PostgreSQL) or the whole file (SQLite).
        if holder:
            return
        if store.backend == "postgres":
            conn = psycopg.connect(store_env)
            conn.execute("LOCK TABLE billing_stripe_events IN EXCLUSIVE MODE")
        else:
            conn = sqlite3.connect(store_env.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
        holder.append(conn)

    with write_lock_held_briefly(store_env, monkeypatch) as impatient:
        try:
            with pytest.raises(Unavailable):
                sync.sync_events(
                    impatient,
                    StripeGateway(fake.api_key, api_base=fake.url),
                    now=NOW,
                    actor="cron",
                    progress=lock_after_the_first_batch,
                )
        finally:
            for conn in holder:
                conn.rollback()
                conn.close()
    # The first batch (events 1-3, event 2 quarantined) is in; the second is not.
    assert [store.event_processed(e["id"]) for e in events] == [True, False, True] + [False] * 3
    assert store.count_quarantined() == 1
    cursor = sync.stored_cursor(store)
    if store.backend == "postgres":
        assert cursor == datetime.fromtimestamp(T0 + 3, UTC)  # past the quarantined event
    else:
        assert cursor is None  # the lock held the settings too: the cursor waits, unharmed
    report = sync.sync_events(
        store, StripeGateway(fake.api_key, api_base=fake.url), now=NOW, actor="cron"
    )
    assert (report.events_applied, report.cursor) == (3, datetime.fromtimestamp(T0 + 6, UTC))


@contextmanager
def write_lock_held_briefly(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A second store on the same data that waits only a moment for a lock."""
    if database_url.startswith("sqlite"):
        from cloudgreet_billing.adapters.store.sqlite import SqliteStore

        opened: Any = SqliteStore(
            Path(database_url.removeprefix("sqlite:///")), busy_timeout_ms=100
        )
    else:
        from cloudgreet_billing.adapters.store.postgres import PostgresStore

        monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=200")
        opened = PostgresStore(database_url)
    try:
        yield opened
    finally:
        opened.close()
