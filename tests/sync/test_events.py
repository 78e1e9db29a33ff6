"""Event processing against the real store, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.services.sync import apply_events
from tests.sync.conftest import T0, customer, event, failed, invoice, paid, subscription

NOW = datetime(2026, 5, 29, 9, 0, tzinfo=UTC)


def run(store: Any, events: list[dict[str, Any]], **kwargs: Any) -> Any:
    return apply_events(store, events, source="file", now=NOW, **kwargs)


def alerts(store: Any, status: str | None = None) -> list[Any]:
    return store.list_alerts(AlertQuery(statuses=None if status is None else (status,), limit=None))


def test_failure_opens_one_alert_and_schedules_dunning_from_the_first_failure(store: Any) -> None:
    report = run(store, [failed("evt_1", "in_1", 1, T0), failed("evt_2", "in_1", 2, T0 + 60)])

    (alert,) = alerts(store)
    assert (alert.type, alert.status, alert.invoice_id, alert.customer_id) == (
        "invoice_failed",
        "open",
        "in_1",
        "cus_1",
    )
    assert (alert.attempt_count, alert.stripe_event_id, alert.amount_due) == (2, "evt_2", 4900)
    assert report.alerts_opened == 1 and report.dunning_scheduled == 3
    mirrored = store.get_invoice("in_1")
    assert mirrored.first_failed_at == datetime.fromtimestamp(T0, UTC)
    assert mirrored.subscription_id == "sub_1"
    steps = store.list_steps(invoice_id="in_1", limit=None)
    assert [(s.day, s.channel, s.status) for s in steps] == [
        (0, "email", "scheduled"),
        (1, "sms", "scheduled"),
        (3, "email", "scheduled"),
    ]
    assert steps[2].due_at == datetime.fromtimestamp(T0, UTC) + timedelta(days=3)
    assert all(s.alert_id == alert.id for s in steps)


def test_payment_resolves_the_alert_and_cancels_pending_steps(store: Any) -> None:
    run(store, [failed("evt_1", "in_1", 1, T0)])
    report = run(store, [paid("evt_2", "in_1", T0 + 100)])

    (alert,) = alerts(store, "resolved")
    assert alert.resolution == "invoice paid (evt_2)"
    assert alert.resolved_at == NOW
    assert (report.alerts_resolved, report.dunning_canceled) == (1, 3)
    assert {s.status for s in store.list_steps(invoice_id="in_1", limit=None)} == {"canceled"}
    trail = [r.action for r in store.audit_trail(f"alert:{alert.id}")]
    assert trail == ["alert.open", "alert.resolve"]


@pytest.mark.parametrize(
    ("event_type", "resolution"),
    [
        ("invoice.payment_succeeded", "invoice paid"),
        ("invoice.voided", "invoice voided"),
        ("invoice.marked_uncollectible", "invoice marked uncollectible"),
    ],
)
def test_every_settling_event_resolves(store: Any, event_type: str, resolution: str) -> None:
    status = {"invoice.voided": "void", "invoice.marked_uncollectible": "uncollectible"}.get(
        event_type, "paid"
    )
    run(store, [failed("evt_1", "in_1", 1, T0)])
    run(store, [event("evt_2", event_type, invoice("in_1", status=status), T0 + 5)])
    (alert,) = alerts(store, "resolved")
    assert alert.resolution == f"{resolution} (evt_2)"


def test_the_same_event_twice_changes_nothing(store: Any) -> None:
    first = run(store, [failed("evt_1", "in_1", 1, T0)])
    again = run(store, [failed("evt_1", "in_1", 1, T0), failed("evt_1", "in_1", 1, T0)])
    assert (first.events_applied, again.events_applied, again.events_duplicate) == (1, 0, 2)
    assert len(alerts(store)) == 1
    assert store.audit_trail(f"alert:{alerts(store)[0].id}")[0].action == "alert.open"
    assert len(store.audit_trail(f"alert:{alerts(store)[0].id}")) == 1


def test_an_older_event_never_overwrites_newer_mirror_state(store: Any) -> None:
    newer = event("evt_2", "invoice.updated", invoice("in_1", attempt_count=3), T0 + 60)
    older = event("evt_1", "invoice.updated", invoice("in_1", attempt_count=1), T0)
    run(store, [newer, older])
    assert store.get_invoice("in_1").attempt_count == 3


def test_a_failure_processed_after_the_payment_never_reopens_and_keeps_its_history(
    store: Any,
) -> None:
    run(store, [paid("evt_2", "in_1", T0 + 100), failed("evt_1", "in_1", 1, T0)])
    assert store.get_invoice("in_1").status == "paid"
    # The history the events tell in order: the failure's alert, resolved by the payment,
    # and its steps canceled by it; nothing open.
    (alert,) = alerts(store, None)
    assert (alert.type, alert.status, alert.resolution) == (
        "invoice_failed",
        "resolved",
        "invoice paid (evt_2)",
    )
    steps = store.list_steps(invoice_id="in_1", limit=None)
    assert [(s.day, s.status, s.reason) for s in steps] == [
        (day, "canceled", "invoice paid (evt_2)") for day in (0, 1, 3)
    ]
    trail = [r.action for r in store.audit_trail(f"alert:{alert.id}")]
    assert trail == ["alert.open", "alert.resolve"]


def test_a_failing_handler_leaves_the_event_unprocessed_and_keeps_the_batch(store: Any) -> None:
    def broken(**kwargs: Any) -> list[Any]:
        raise RuntimeError("planner down")

    batch = [
        event("evt_c", "customer.updated", customer(), T0),
        failed("evt_1", "in_1", 1, T0 + 1),
        event("evt_s", "customer.subscription.updated", subscription(), T0 + 2),
    ]
    report = run(store, batch, planner=broken)
    assert (report.events_applied, report.events_failed) == (2, 1)
    assert report.failures == ["evt_1: RuntimeError: planner down"]
    assert not store.event_processed("evt_1")
    assert store.get_invoice("in_1") is None  # its mirror write rolled back with it
    assert store.get_customer("cus_1").email == "owner@example.com"
    assert store.get_subscription("sub_1").status == "active"

    retried = run(store, batch, planner=TimelinePlanner())
    assert (retried.events_applied, retried.events_duplicate, retried.alerts_opened) == (1, 2, 1)
    assert store.event_processed("evt_1")


def test_unknown_types_are_recorded_and_skipped(store: Any) -> None:
    report = run(
        store,
        [
            event("evt_1", "charge.refunded", {"id": "ch_1", "object": "charge"}, T0),
            event("evt_2", "customer.source.created", {"id": "card_1", "object": "card"}, T0),
        ],
    )
    assert (report.events_skipped, report.events_applied) == (2, 0)
    assert store.event_processed("evt_1") and store.event_processed("evt_2")


def test_action_required_and_stripe_usage_alerts(store: Any) -> None:
    triggered = {
        "object": "billing.alert_triggered",
        "customer": "cus_9",
        "value": 1200,
        "created": T0,
        "livemode": False,
        "alert": {
            "id": "alrt_1",
            "object": "billing.alert",
            "title": "Calls over plan",
            "usage_threshold": {"gte": 1000, "meter": {"id": "mtr_1"}},
        },
    }
    run(
        store,
        [
            event("evt_1", "invoice.payment_action_required", invoice("in_2"), T0),
            event("evt_2", "billing.alert.triggered", triggered, T0),
        ],
    )
    by_type = {a.type: a for a in alerts(store)}
    assert by_type["payment_action_required"].invoice_id == "in_2"
    usage = by_type["threshold_exceeded"]
    assert (usage.customer_id, usage.last_failure) == (
        "cus_9",
        "Calls over plan: usage 1200 reached 1000",
    )
    # action-required alerts plan no dunning
    assert store.list_steps(invoice_id="in_2", limit=None) == []


def test_legacy_invoice_shape_and_customer_deletion(store: Any) -> None:
    run(
        store,
        [
            event(
                "evt_1",
                "invoice.finalized",
                invoice("in_3", legacy_shape=True, subscription="sub_7"),
                T0,
            ),
            event("evt_2", "customer.deleted", customer("cus_5"), T0),
        ],
    )
    assert store.get_invoice("in_3").subscription_id == "sub_7"
    assert store.get_customer("cus_5").deleted is True


def _history() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for n in range(1, 7):
        iid, t = f"in_{n}", T0 + n * 1000
        events.append(event(f"evt_{n}a", "invoice.finalized", invoice(iid, attempt_count=0), t))
        events.append(failed(f"evt_{n}b", iid, 1, t + 10))
        events.append(failed(f"evt_{n}c", iid, 2, t + 20))
        # A settled invoice carries the attempts made before it settled.
        if n % 3 == 0:
            settled = invoice(iid, status="paid", attempt_count=2)
            events.append(event(f"evt_{n}d", "invoice.paid", settled, t + 30))
        elif n % 3 == 1:
            settled = invoice(iid, status="void", attempt_count=2)
            events.append(event(f"evt_{n}d", "invoice.voided", settled, t + 30))
    events.append(event("evt_c1", "customer.updated", customer(email="a@example.com"), T0 + 1))
    events.append(event("evt_c2", "customer.updated", customer(email="b@example.com"), T0 + 2))
    events.append(
        event("evt_s1", "customer.subscription.updated", subscription(status="past_due"), T0 + 3)
    )
    events.append(
        event("evt_s2", "customer.subscription.updated", subscription(status="active"), T0 + 4)
    )
    return events


def _state(store: Any) -> Any:
    invoices = {
        i: (inv.status, inv.attempt_count, inv.first_failed_at, inv.last_failure_message)
        for i in (f"in_{n}" for n in range(1, 7))
        if (inv := store.get_invoice(i)) is not None
    }
    # Every alert and step, resolved and canceled ones too: the history is the same in
    # any order (domain.merge).
    alert_rows = sorted(
        (
            a.invoice_id,
            a.type,
            a.status,
            a.attempt_count,
            a.stripe_event_id,
            a.last_failure,
            a.resolution,
        )
        for a in alerts(store, None)
    )
    steps = sorted(
        (s.invoice_id, s.day, s.channel, s.status, s.due_at, s.reason)
        for s in store.list_steps(limit=None)
    )
    return (
        invoices,
        alert_rows,
        steps,
        store.get_customer("cus_1").email,
        store.get_subscription("sub_1").status,
    )


def test_replaying_the_history_three_times_shuffled_equals_one_ordered_pass(
    store: Any, tmp_path: Any
) -> None:
    from cloudgreet_billing.adapters.store.sqlite import SqliteStore

    history = _history()
    reference = SqliteStore(tmp_path / "reference.db")
    reference.migrate()
    run(reference, sorted(history, key=lambda e: e["created"]))
    expected = _state(reference)
    reference.close()

    rng = random.Random(20260529)
    for _ in range(3):
        shuffled = history[:]
        rng.shuffle(shuffled)
        run(store, shuffled)
    assert _state(store) == expected
    assert len(alerts(store, "open")) == 2  # in_2 and in_5 still fail
    assert {a.invoice_id for a in alerts(store, "resolved")} == {"in_1", "in_3", "in_4", "in_6"}


def test_a_batch_equals_one_event_at_a_time_in_state_and_counts(store: Any, tmp_path: Any) -> None:
    from cloudgreet_billing.adapters.store.sqlite import SqliteStore

    history = sorted(_history(), key=lambda e: e["created"])
    reference = SqliteStore(tmp_path / "reference.db")
    reference.migrate()
    one_by_one = [run(reference, [item]) for item in history]
    expected = _state(reference)
    reference.close()

    batched = run(store, history)  # one batch: the batched path on either engine
    assert _state(store) == expected
    for counter in (
        "events_applied",
        "alerts_opened",
        "alerts_resolved",
        "dunning_scheduled",
        "dunning_canceled",
    ):
        assert getattr(batched, counter) == sum(getattr(r, counter) for r in one_by_one)
    assert batched.alerts_opened > 0 and batched.alerts_resolved > 0
    assert batched.dunning_canceled > 0


def test_a_statement_failing_mid_batch_leaves_out_only_its_event(store: Any) -> None:
    # The failure comes from the database, not from Python: on PostgreSQL's pipeline it
    # surfaces only when a later answer is read, and the batch is redone event by event.
    planner = TimelinePlanner()

    def planner_breaking_in_bad(**kwargs: Any) -> list[Any]:
        steps = planner(**kwargs)
        if kwargs["invoice_id"] == "in_bad":
            steps[0] = replace(steps[0], channel="fax")  # violates the channel CHECK
        return steps

    batch = [
        failed("evt_1", "in_1", 1, T0),
        failed("evt_bad", "in_bad", 1, T0 + 1),
        failed("evt_2", "in_2", 1, T0 + 2),
        paid("evt_3", "in_1", T0 + 3),
        failed("evt_2", "in_2", 1, T0 + 2),  # a repeat in the same batch
    ]
    report = run(store, batch, planner=planner_breaking_in_bad)

    assert (report.events_applied, report.events_duplicate, report.events_failed) == (3, 1, 1)
    assert report.failures[0].startswith("evt_bad: ")
    assert "check constraint" in report.failures[0].lower()
    assert (report.alerts_opened, report.alerts_resolved) == (2, 1)
    assert (report.dunning_scheduled, report.dunning_canceled) == (6, 3)
    assert not store.event_processed("evt_bad") and store.get_invoice("in_bad") is None
    assert [a.invoice_id for a in alerts(store, "open")] == ["in_2"]
    assert store.event_processed("evt_3") and store.get_invoice("in_1").status == "paid"
    if store.backend == "postgres":  # prepared only for the batch, also when it failed
        assert store._execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0

    retried = run(store, batch, planner=planner)  # the store is usable, the event retried
    assert (retried.events_applied, retried.events_duplicate, retried.alerts_opened) == (1, 4, 1)


def test_a_good_batch_leaves_no_prepared_statements_behind(store: Any) -> None:
    report = run(store, [failed("evt_1", "in_1", 1, T0), paid("evt_2", "in_1", T0 + 1)])
    assert (report.alerts_opened, report.alerts_resolved, report.dunning_canceled) == (1, 1, 3)
    if store.backend == "postgres":  # a transaction pooler may not keep them across batches
        assert store._execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
