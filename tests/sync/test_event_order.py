"""The order of events does not matter (``domain.merge``), on SQLite and PostgreSQL.

The same Stripe events, applied in any order, with replays, in any number of deliveries,
leave the same store as the events applied once in the order Stripe created them: every
mirrored row, every alert with its status, resolution and audit history, every dunning
step. Applied through ``apply_events``, the path ``sync`` (file, stdin, Events API) takes;
``serve`` applies its plans through the same ``Store.apply_event_plans``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudgreet_billing.adapters.store.migrations import TABLES
from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from tests.cli.helpers import run as run_cli
from tests.sync.conftest import T0, event, full_invoice
from tests.sync.histories import (
    CARDS,
    CUSTOMER,
    DAY,
    INVOICE,
    SUBSCRIPTION,
    apply,
    customer_object,
    deliveries,
    histories,
    invoice_object,
    subscription_object,
    wipe,
)

ORDER_SETTINGS: Final = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: What the store numbers itself: replaced by what the row is about.
_SURROGATE: Final = {"billing_alerts": "id", "billing_dunning_events": "id"}

DECLINE: Final = ("card_declined", "insufficient_funds", "Your card has insufficient funds.")


def _rows(store: Any, table: str) -> list[dict[str, Any]]:
    cursor = store._execute(f"SELECT * FROM {table}")  # noqa: S608
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def whole_state(store: Any) -> dict[str, Any]:
    """Every row of every table, the numbers the store picks itself replaced by what they
    stand for (an alert by its key). The audit log is compared as what happened to each
    alert: its details name the delivery that did it, which depends on arrival."""
    alerts = _rows(store, "billing_alerts")
    keys = {row["id"]: row["dedupe_key"] for row in alerts}
    assert len(keys) == len(set(keys.values())), "one alert per invoice and type"
    state: dict[str, Any] = {}
    for table in TABLES:
        if table in ("billing_schema_version", "billing_audit_log"):
            continue
        rows = []
        for row in _rows(store, table):
            row.pop(_SURROGATE.get(table, ""), None)
            if "alert_id" in row:
                row["alert_id"] = keys.get(row["alert_id"])
            rows.append(row)
        state[table] = sorted(rows, key=repr)
    state["audit"] = Counter(
        (row["actor"], row["action"], keys.get(int(row["target"].split(":")[1])), row["outcome"])
        for row in _rows(store, "billing_audit_log")
        if row["target"].startswith("alert:")
    )
    return state


# --- the property ----------------------------------------------------------------------
@ORDER_SETTINGS
@given(data=st.data())
def test_any_order_with_replays_gives_the_state_of_the_order_stripe_created(
    shared_store: Any, data: Any
) -> None:
    history = data.draw(histories())
    arrived = data.draw(deliveries(history))

    wipe(shared_store)
    apply(shared_store, history)
    expected = whole_state(shared_store)

    wipe(shared_store)
    apply(shared_store, *arrived)
    assert whole_state(shared_store) == expected
    # Every column is compared, the decline and the customer's card with the rest.
    for table, columns in _RECOVERY_COLUMNS.items():
        assert all(columns <= set(row) for row in expected[table])


#: Schema 6's columns, which the failures and customers of the histories fill.
_RECOVERY_COLUMNS: Final = {
    "billing_invoices": {"last_decline_code", "last_advice_code", "last_failure_payment_method"},
    "billing_customers": {"default_payment_method"},
}


# --- one example per rule, each failing under "the last to arrive wins" ----------------
def inv(
    kind: str, evt: str, created: int, *, status: str = "open", attempts: int = 1, **extra: Any
) -> dict[str, Any]:
    obj = invoice_object(
        INVOICE,
        CUSTOMER,
        SUBSCRIPTION,
        status=status,
        attempt_count=attempts,
        created=T0 - 3600,
        amount=12900,
        **extra,
    )
    return event(evt, kind, obj, created)


def both_orders(store: Any, events: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    wipe(store)
    apply(store, events)
    in_order = whole_state(store)
    wipe(store)
    apply(store, events[::-1])
    return in_order, whole_state(store)


def test_finalized_and_payment_failed_in_the_same_second_reversed(shared_store: Any) -> None:
    events = [
        inv("invoice.finalized", "evt_1QpL8ILkdIwHu7ixFn1sHd0A", T0, attempts=0),
        inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, decline=DECLINE),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    mirrored = shared_store.get_invoice(INVOICE)
    assert (mirrored.attempt_count, mirrored.last_failure_code) == (1, "insufficient_funds")
    assert mirrored.raw["attempt_count"] == 1, "the object shown is the failed one"
    (alert,) = shared_store.list_alerts(AlertQuery(statuses=None, limit=None))
    assert (alert.status, alert.attempt_count) == ("open", 1)


def test_attempt_count_never_falls_and_the_highest_attempt_names_the_failure(
    shared_store: Any,
) -> None:
    second = ("card_declined", "generic_decline", "Your card was declined.")
    events = [
        inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, decline=DECLINE),
        inv(
            "invoice.payment_failed",
            "evt_1QpL8ILkdIwHu7ixPf3bMe1C",
            T0 + DAY,
            attempts=2,
            decline=second,
        ),
        # An invoice.updated in the second of the retry, as Stripe sends it, without error.
        inv("invoice.updated", "evt_1QpL8ILkdIwHu7ixUp4cNf2D", T0 + DAY, attempts=2),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    mirrored = shared_store.get_invoice(INVOICE)
    assert (mirrored.attempt_count, mirrored.last_failure_code) == (2, "generic_decline")
    assert mirrored.last_decline_code == "generic_decline"
    (alert,) = shared_store.list_alerts(AlertQuery(statuses=None, limit=None))
    assert (alert.attempt_count, alert.stripe_event_id) == (2, "evt_1QpL8ILkdIwHu7ixPf3bMe1C")


def test_a_payment_before_its_failure_keeps_the_failure_and_reopens_nothing(
    shared_store: Any,
) -> None:
    events = [
        inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, decline=DECLINE),
        inv("invoice.paid", "evt_1QpL8ILkdIwHu7ixPd5dOg3E", T0 + DAY, status="paid"),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    mirrored = shared_store.get_invoice(INVOICE)
    assert (mirrored.status, mirrored.last_failure_code) == ("paid", "insufficient_funds")
    (alert,) = shared_store.list_alerts(AlertQuery(statuses=None, limit=None))
    assert (alert.status, alert.resolution) == (
        "resolved",
        "invoice paid (evt_1QpL8ILkdIwHu7ixPd5dOg3E)",
    )
    steps = shared_store.list_steps(invoice_id=INVOICE, limit=None)
    assert {(s.status, s.reason) for s in steps} == {("canceled", alert.resolution)}


def test_paid_and_payment_succeeded_in_the_same_second_resolve_alike(shared_store: Any) -> None:
    paid_id, succeeded_id = "evt_1QpL8ILkdIwHu7ixZz9pAid1", "evt_1QpL8ILkdIwHu7ixAa1sUcc2"
    events = [
        inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, decline=DECLINE),
        inv("invoice.paid", paid_id, T0 + DAY, status="paid"),
        inv("invoice.payment_succeeded", succeeded_id, T0 + DAY, status="paid"),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    # The earliest settling event by (created, id) takes the credit, in either order.
    (alert,) = shared_store.list_alerts(AlertQuery(statuses=None, limit=None))
    assert alert.resolution == f"invoice paid ({succeeded_id})"


def test_an_uncollectible_invoice_paid_later_resolves_as_written_off(shared_store: Any) -> None:
    events = [
        inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, decline=DECLINE),
        inv(
            "invoice.marked_uncollectible",
            "evt_1QpL8ILkdIwHu7ixUc6eQh4F",
            T0 + DAY,
            status="uncollectible",
        ),
        inv("invoice.paid", "evt_1QpL8ILkdIwHu7ixPd5dOg3E", T0 + 3 * DAY, status="paid"),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    assert shared_store.get_invoice(INVOICE).status == "paid"
    (alert,) = shared_store.list_alerts(AlertQuery(statuses=None, limit=None))
    assert alert.resolution == "invoice marked uncollectible (evt_1QpL8ILkdIwHu7ixUc6eQh4F)"


def test_an_older_failure_delivered_late_moves_canceled_steps_too(shared_store: Any) -> None:
    events = [
        inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0, decline=DECLINE),
        inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf3bMe1C", T0 + DAY, attempts=2),
        inv("invoice.paid", "evt_1QpL8ILkdIwHu7ixPd5dOg3E", T0 + 2 * DAY, status="paid"),
    ]
    wipe(shared_store)
    apply(shared_store, events)
    expected = whole_state(shared_store)
    wipe(shared_store)
    apply(shared_store, [events[1]], [events[2]], [events[0]])
    assert whole_state(shared_store) == expected
    due = {s.day: s.due_at for s in shared_store.list_steps(invoice_id=INVOICE, limit=None)}
    assert due[0] == datetime.fromtimestamp(T0, UTC)


def _sub(evt: str, status: str, created: int, *, cancel: bool = False) -> dict[str, Any]:
    obj = subscription_object(
        SUBSCRIPTION,
        CUSTOMER,
        status=status,
        created=T0 - 30 * DAY,
        period_start=T0 - 30 * DAY,
        cancel_at_period_end=cancel,
    )
    return event(evt, "customer.subscription.updated", obj, created)


def test_a_subscription_updated_twice_in_the_same_second(shared_store: Any) -> None:
    events = [
        _sub("evt_1QpL8ILkdIwHu7ixSb7fRi5G", "past_due", T0),
        _sub("evt_1QpL8ILkdIwHu7ixSa8gSj6H", "active", T0),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    assert shared_store.get_subscription(SUBSCRIPTION).status == "active"
    # Same status in the same second: the event id decides, not arrival.
    events = [
        _sub("evt_1QpL8ILkdIwHu7ixSb7fRi5G", "active", T0),
        _sub("evt_1QpL8ILkdIwHu7ixSa8gSj6H", "active", T0, cancel=True),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    assert shared_store.get_subscription(SUBSCRIPTION).cancel_at_period_end is False


def test_a_canceled_subscription_stays_canceled(shared_store: Any) -> None:
    events = [
        _sub("evt_1QpL8ILkdIwHu7ixSb7fRi5G", "canceled", T0),
        _sub("evt_1QpL8ILkdIwHu7ixSa8gSj6H", "active", T0 + 60),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    assert shared_store.get_subscription(SUBSCRIPTION).status == "canceled"


def test_customer_updates_in_the_same_second_and_a_deletion(shared_store: Any) -> None:
    first = customer_object(CUSTOMER, email="owner@brightsmiles.example", created=T0 - DAY)
    second = customer_object(CUSTOMER, email="billing@brightsmiles.example", created=T0 - DAY)
    events = [
        event("evt_1QpL8ILkdIwHu7ixCu9hTk7I", "customer.updated", first, T0),
        event("evt_1QpL8ILkdIwHu7ixCt0iUl8J", "customer.updated", second, T0),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    events.append(event("evt_1QpL8ILkdIwHu7ixCd1jVm9K", "customer.deleted", first, T0 - 5))
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    assert shared_store.get_customer(CUSTOMER).deleted is True


def test_sync_events_file_in_reverse_gives_the_same_state(store_env: str, tmp_path: Path) -> None:
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    events = [
        event(
            "evt_1QpL8ILkdIwHu7ixFn1sHd0A", "invoice.finalized", full_invoice(attempt_count=0), T0
        ),
        event("evt_1QpL8ILkdIwHu7ixPf2aLd0B", "invoice.payment_failed", full_invoice(), T0),
        event(
            "evt_1QpL8ILkdIwHu7ixPd5dOg3E",
            "invoice.paid",
            full_invoice(status="paid"),
            T0 + DAY,
        ),
    ]
    states = []
    for order in (events, events[::-1]):
        store = open_store(load_settings())
        try:
            wipe(store)
        finally:
            store.close()
        path = tmp_path / "events.ndjson"
        path.write_text("".join(json.dumps(item) + "\n" for item in order))
        result = run_cli("sync", "--events-file", str(path), "--json")
        assert result.exit_code == 0, result.stderr
        store = open_store(load_settings())
        try:
            state = whole_state(store)
            del state["billing_settings"]  # when each run last synced
            for table in ("billing_invoices", "billing_customers", "billing_subscriptions"):
                for row in state[table]:
                    row.pop("synced_at")  # the clock of each run
            for table in ("billing_alerts", "billing_dunning_events", "billing_stripe_events"):
                for row in state[table]:
                    for stamp in ("created_at", "updated_at", "resolved_at", "processed_at"):
                        row.pop(stamp, None)
            states.append(state)
        finally:
            store.close()
    assert states[0] == states[1]
    (alert,) = state["billing_alerts"]
    assert (alert["status"], alert["attempt_count"]) == ("resolved", 1)


@pytest.mark.postgres
def test_two_workers_settling_at_once_agree_on_the_earliest_settlement(postgres_url: str) -> None:
    """Two workers apply the invoice's two settling events at the same moment; the later
    one commits first. The earlier one, waiting on the invoice's row, still takes the
    credit for what the later one resolved and canceled."""
    import threading

    import psycopg

    from cloudgreet_billing.adapters.store.postgres import PostgresStore

    earlier, later = "evt_1QpL8ILkdIwHu7ixAa1sUcc2", "evt_1QpL8ILkdIwHu7ixZz9pAid1"
    setup = PostgresStore(postgres_url)
    setup.migrate()
    apply(setup, [inv("invoice.payment_failed", "evt_1QpL8ILkdIwHu7ixPf2aLd0B", T0)])
    blocker = psycopg.connect(postgres_url)
    blocker.execute("SELECT 1 FROM billing_invoices WHERE id = %s FOR UPDATE", (INVOICE,))

    def settle(event_id: str) -> None:
        worker = PostgresStore(postgres_url)
        try:
            apply(worker, [inv("invoice.paid", event_id, T0 + DAY, status="paid")])
        finally:
            worker.close()

    def waiting(count: int) -> None:
        """Until ``count`` sessions wait for a lock (polled, no fixed sleep)."""
        with psycopg.connect(postgres_url, autocommit=True) as watcher:
            while True:
                (found,) = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                if found >= count:
                    return

    workers = [threading.Thread(target=settle, args=(event_id,)) for event_id in (later, earlier)]
    workers[0].start()
    waiting(1)  # the later settlement queues first for the invoice's row, so commits first
    workers[1].start()
    waiting(2)
    blocker.commit()
    blocker.close()
    for worker in workers:
        worker.join(timeout=60)
    (alert,) = setup.list_alerts(AlertQuery(statuses=None, limit=None))
    assert alert.resolution == f"invoice paid ({earlier})"
    steps = setup.list_steps(invoice_id=INVOICE, limit=None)
    assert {(step.status, step.reason) for step in steps} == {("canceled", alert.resolution)}
    setup.close()


def test_the_decline_of_the_highest_attempt_is_kept_with_its_card_and_advice(
    shared_store: Any,
) -> None:
    stolen = ("card_declined", "stolen_card", "Your card was declined.")
    events = [
        inv(
            "invoice.payment_failed",
            "evt_1QpL8ILkdIwHu7ixPf2aLd0B",
            T0,
            decline=stolen,
            advice="do_not_try_again",
            card=CARDS[0],
        ),
        # The retry, on the newer API: the payment listed under payments, an older card.
        inv(
            "invoice.payment_failed",
            "evt_1QpL8ILkdIwHu7ixPf3bMe1C",
            T0 + DAY,
            attempts=2,
            decline=DECLINE,
            advice="try_again_later",
            card=CARDS[1],
            listed_payment=True,
        ),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    mirrored = shared_store.get_invoice(INVOICE)
    assert (
        mirrored.last_decline_code,
        mirrored.last_advice_code,
        mirrored.last_failure_payment_method,
    ) == ("insufficient_funds", "try_again_later", CARDS[1])


def test_in_one_second_the_failure_that_carries_the_decline_wins(shared_store: Any) -> None:
    # Stripe's invoice.payment_failed and another delivery of the same attempt, one with
    # the payment expanded and one without: whatever their ids and arrival, the decline
    # stays (the key ranks a failure carrying a decline above one without).
    for with_decline, without in (
        ("evt_1QpL8ILkdIwHu7ixAa1sUcc2", "evt_1QpL8ILkdIwHu7ixZz9pAid1"),
        ("evt_1QpL8ILkdIwHu7ixZz9pAid1", "evt_1QpL8ILkdIwHu7ixAa1sUcc2"),
    ):
        events = [
            inv("invoice.payment_failed", with_decline, T0, decline=DECLINE, card=CARDS[0]),
            inv("invoice.payment_failed", without, T0),
        ]
        in_order, reversed_ = both_orders(shared_store, events)
        assert reversed_ == in_order
        mirrored = shared_store.get_invoice(INVOICE)
        assert (mirrored.last_decline_code, mirrored.last_failure_payment_method) == (
            "insufficient_funds",
            CARDS[0],
        )
        assert mirrored.last_failure_message == "Your card has insufficient funds."


def test_the_customers_card_follows_the_customer_row_shown(shared_store: Any) -> None:
    before = customer_object(
        CUSTOMER, email="owner@brightsmiles.example", created=T0 - DAY, card=CARDS[0]
    )
    after = customer_object(
        CUSTOMER, email="owner@brightsmiles.example", created=T0 - DAY, card=CARDS[1]
    )
    events = [
        event("evt_1QpL8ILkdIwHu7ixCu9hTk7I", "customer.updated", before, T0),
        event("evt_1QpL8ILkdIwHu7ixCt0iUl8J", "customer.updated", after, T0 + 60),
    ]
    in_order, reversed_ = both_orders(shared_store, events)
    assert reversed_ == in_order
    assert shared_store.get_customer(CUSTOMER).default_payment_method == CARDS[1]
