"""The Supabase store's mirror (MirrorOps) through the real ``supabase`` client and the
PostgREST stand-in, on a real PostgreSQL: what the contract suite does not cover.

A batch of events is one request whatever its size, the row cap included; a bad event is
quarantined inside that request and the rest applied, with the PostgreSQL store's reason;
the same events in any order leave the same rows as the PostgreSQL store given them in
Stripe's order; a store fault writes nothing; a batch whose answer was lost may be sent
again; and two workers applying the same events at once apply each once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.events import plan_event
from cloudgreet_billing.domain.mirror import parse_invoice
from cloudgreet_billing.errors import StoreError, Unavailable
from cloudgreet_billing.services.sync import BATCH_SIZE, apply_events
from tests.postgrest.server import Fault
from tests.sync.conftest import T0, customer, event, full_invoice
from tests.sync.histories import apply, deliveries, histories, wipe
from tests.sync.test_event_order import whole_state

NOW = datetime(2026, 5, 29, 9, 0, tzinfo=UTC)
APPLY = "^/rpc/billing_api_apply_event_plans"


def invoice_id(n: int) -> str:
    return f"in_1QpL8HLkdIwHu7ix{n:08d}"


def failed(n: int, *, created: int | None = None, attempt_count: int = 1) -> dict[str, Any]:
    obj = full_invoice(invoice_id(n), attempt_count=attempt_count, created=T0 - 3600 + n)
    return event(
        f"evt_1QpL8ILkdIwHu7ixFa{n:06d}",
        "invoice.payment_failed",
        obj,
        T0 + n if created is None else created,
    )


def paid(n: int) -> dict[str, Any]:
    obj = full_invoice(invoice_id(n), status="paid", created=T0 - 3600 + n)
    return event(f"evt_1QpL8ILkdIwHu7ixPd{n:06d}", "invoice.paid", obj, T0 + 86_400 + n)


def customer_updated(n: int) -> dict[str, Any]:
    obj = customer(f"cus_RiJ2m0yQb{n:05d}", email=f"owner{n}@example.com")
    return event(f"evt_1QpL8ILkdIwHu7ixCu{n:06d}", "customer.updated", obj, T0 + n)


def breaking_channel_of(bad_invoice: str) -> Any:
    """The default timeline, but the bad invoice's first step on a channel the store's
    CHECK refuses: a fault of that event only, which only the database sees."""
    planner = TimelinePlanner()

    def plan(**kwargs: Any) -> list[Any]:
        steps = planner(**kwargs)
        if kwargs["invoice_id"] == bad_invoice:
            steps[0] = replace(steps[0], channel="fax")
        return steps

    return plan


@pytest.fixture
def reference(postgres_server: str) -> Iterator[PostgresStore]:
    """The PostgreSQL store on a database of its own: what the Supabase store must match."""
    name = f"billing_ref_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_server.rpartition("/")
    store = PostgresStore(f"{base}/{name}")
    store.migrate()
    yield store
    store.close()
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def owner(postgrest: Any, supabase_store: Any) -> Iterator[PostgresStore]:
    """The project's database as its owner sees it (the SQL editor), to read what the
    REST store wrote, row by row."""
    store = PostgresStore(postgrest.database_url)
    yield store
    store.close()


class ThroughRest:
    """The Supabase store, for the services (``apply_events``) and tests that need a whole
    store: every operation the Supabase store has goes through REST; the others (areas
    still being built, and the tests' own ``_execute``) go to the owner's connection."""

    def __init__(self, rest: Any, owner: PostgresStore) -> None:
        self.rest, self.owner = rest, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rest if hasattr(type(self.rest), name) else self.owner, name)


@pytest.fixture
def store(supabase_store: Any, owner: PostgresStore) -> ThroughRest:
    return ThroughRest(supabase_store, owner)


def test_a_bad_event_is_quarantined_in_the_batchs_request_and_the_rest_applied(
    store: Any, postgrest: Any, owner: PostgresStore, reference: PostgresStore
) -> None:
    events = [failed(n) for n in range(5)] + [paid(1)]
    planner = breaking_channel_of(invoice_id(2))

    report = apply_events(store, events, source="file", now=NOW, planner=planner)

    assert len(postgrest.requests_to(APPLY, "POST")) == 1
    assert (report.events_applied, report.events_failed) == (5, 1)
    assert (report.alerts_opened, report.alerts_resolved) == (4, 1)
    assert (report.dunning_scheduled, report.dunning_canceled) == (12, 3)
    assert store.get_invoice(invoice_id(2)) is None  # rolled back alone
    assert not store.event_processed("evt_1QpL8ILkdIwHu7ixFa000002")
    assert store.get_invoice(invoice_id(1)).status == "paid"
    (kept,) = owner.list_quarantined()
    assert (kept.event_id, kept.source, kept.times_seen) == (
        "evt_1QpL8ILkdIwHu7ixFa000002",
        "file",
        1,
    )
    # The PostgreSQL store given the same events says the same, in the same words.
    expected = apply_events(reference, events, source="file", now=NOW, planner=planner)
    (reference_kept,) = reference.list_quarantined()
    assert kept.reason == reference_kept.reason
    assert kept.reason.startswith("CheckViolation: ")
    assert "billing_dunning_events" in kept.reason
    assert report == expected
    assert whole_state(owner) == whole_state(reference)

    # Fixed, the event goes through on its own; its quarantine row settles.
    again = apply_events(store, events, source="file", now=NOW)
    assert (again.events_applied, again.events_duplicate) == (1, 5)
    assert owner.get_quarantined(kept.id).status == "applied"


def test_a_failing_planner_quarantines_only_the_events_that_needed_it(
    store: Any, owner: PostgresStore
) -> None:
    def broken(**kwargs: Any) -> list[Any]:
        raise RuntimeError("planner down")

    batch = [customer_updated(1), failed(1), paid(7)]
    report = apply_events(store, batch, source="file", now=NOW, planner=broken)

    assert (report.events_applied, report.events_failed) == (2, 1)
    assert report.failures == ["evt_1QpL8ILkdIwHu7ixFa000001: RuntimeError: planner down"]
    assert store.get_customer("cus_RiJ2m0yQb00001").email == "owner1@example.com"
    assert store.get_invoice(invoice_id(7)).status == "paid"
    assert [row.reason for row in owner.list_quarantined()] == ["RuntimeError: planner down"]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_order_gives_the_rows_the_postgres_store_gives_in_stripes_order(
    store: Any, owner: PostgresStore, reference: PostgresStore, data: Any
) -> None:
    history = data.draw(histories())
    arrived = data.draw(deliveries(history))
    wipe(reference)
    apply(reference, history)
    wipe(owner)
    apply(store, *arrived)
    assert whole_state(owner) == whole_state(reference)


def test_2000_events_past_the_row_cap_lose_nothing_in_four_requests(
    store: Any, postgrest: Any, owner: PostgresStore
) -> None:
    postgrest.max_rows = 50
    events = (
        [failed(n) for n in range(1000)]
        + [paid(n) for n in range(0, 1000, 2)]
        + [customer_updated(n) for n in range(500)]
    )
    before = store.rest._api.requests

    report = apply_events(store, events, source="api", now=NOW)

    # One request per batch of BATCH_SIZE events, and a few reads around them.
    assert len(events) // BATCH_SIZE == 4
    assert len(postgrest.requests_to(APPLY, "POST")) == 4
    assert store.rest._api.requests - before <= 10
    assert (report.events_seen, report.events_applied, report.events_failed) == (2000, 2000, 0)
    assert (report.alerts_opened, report.alerts_resolved) == (1000, 500)
    assert (report.dunning_scheduled, report.dunning_canceled) == (3000, 1500)
    counts = store.row_counts()
    assert counts["billing_stripe_events"] == 2000
    assert counts["billing_invoices"] == 1000
    assert counts["billing_customers"] == 500
    assert counts["billing_dunning_events"] == 3000
    assert counts["billing_audit_log"] == 1500  # an open per failure, a resolve per payment
    assert store.last_event_processed_at() == NOW
    assert store.get_invoice(invoice_id(998)).status == "paid"
    assert store.get_invoice(invoice_id(999)).first_failed_at == datetime.fromtimestamp(
        T0 + 999, UTC
    )


def test_a_listing_past_the_row_cap_is_one_request_and_counts_every_change(
    store: Any, postgrest: Any
) -> None:
    postgrest.max_rows = 50
    listed = [parse_invoice(full_invoice(invoice_id(n))) for n in range(600)]
    assert store.upsert_invoices(listed, NOW, NOW) == 600
    assert len(postgrest.requests_to("^/rpc/billing_api_upsert_invoices", "POST")) == 1
    # Seen again at the same moment: merged, still shown (a listing loses only to a
    # larger key), and the older listing of one changes nothing.
    assert store.upsert_invoices(listed, NOW, NOW) == 600
    assert not store.upsert_invoice(listed[0], NOW - timedelta(hours=1), NOW)
    assert store.row_counts()["billing_invoices"] == 600


def test_a_batch_whose_answer_was_lost_can_be_sent_again(
    store: Any, postgrest: Any, owner: PostgresStore
) -> None:
    events = [failed(n) for n in range(3)] + [paid(0)]
    postgrest.inject(Fault(method="POST", path=APPLY, drop=True, after_commit=True))
    with pytest.raises(Unavailable):
        apply_events(store, events, source="webhook", now=NOW)
    applied_once = whole_state(owner)

    again = apply_events(store, events, source="webhook", now=NOW)

    assert (again.events_duplicate, again.events_applied) == (4, 0)
    assert whole_state(owner) == applied_once
    assert owner.row_counts()["billing_audit_log"] == 4


def test_a_store_fault_mid_batch_writes_nothing_of_it(
    store: Any, postgrest: Any, owner: PostgresStore
) -> None:
    apply_events(store, [failed(1)], source="api", now=NOW)
    database = postgrest.database_url.rpartition("/")[2]
    # The API role gives up on a lock after a moment (hosted projects set such timeouts
    # per role); fresh connections pick the setting up.
    postgrest.sql(f"ALTER ROLE authenticator IN DATABASE \"{database}\" SET lock_timeout = '300ms'")
    postgrest.resize_pool(2)
    before = whole_state(owner)
    with psycopg.connect(postgrest.database_url) as holder:
        # Another session holds the invoice that the batch's third event pays.
        holder.execute("SELECT 1 FROM billing_invoices WHERE id = %s FOR UPDATE", (invoice_id(1),))
        with pytest.raises(Unavailable, match="could not finish the request"):
            apply_events(store, [failed(2), failed(3), paid(1)], source="api", now=NOW)
        assert whole_state(owner) == before
        assert not store.event_processed("evt_1QpL8ILkdIwHu7ixFa000002")
    retried = apply_events(store, [failed(2), failed(3), paid(1)], source="api", now=NOW)
    assert (retried.events_applied, retried.alerts_opened, retried.alerts_resolved) == (3, 2, 1)


def test_two_workers_applying_the_same_events_at_once_apply_each_once(
    store: Any, postgrest: Any, owner: PostgresStore
) -> None:
    """The function called directly on PostgreSQL, as two concurrent requests run it: the
    second waits on the events' primary keys, then finds them processed."""
    import json

    from cloudgreet_billing.adapters.store.supabase.event_plans import plan_json

    planner = TimelinePlanner()
    plans = [plan_event(e, "webhook") for e in (failed(1), failed(2), paid(1))]
    body = json.dumps([plan_json(plan, planner) for plan in plans])
    call = "SELECT billing_api_apply_event_plans(%s::jsonb, '[]'::jsonb, %s)"
    answers: list[Any] = []
    with (
        psycopg.connect(postgrest.database_url) as first,
        psycopg.connect(postgrest.database_url) as second,
    ):
        answers.append(first.execute(call, (body, NOW)).fetchone()[0])  # not committed yet
        worker = threading.Thread(
            target=lambda: answers.append(second.execute(call, (body, NOW)).fetchone()[0])
        )
        worker.start()
        worker.join(timeout=1)
        assert worker.is_alive(), "the second worker must wait for the first"
        first.commit()
        worker.join(timeout=10)
        second.commit()
    assert [a["status"] for a in answers[0]] == ["applied"] * 3
    assert [a["status"] for a in answers[1]] == ["duplicate"] * 3
    counts = owner.row_counts()
    assert (counts["billing_alerts"], counts["billing_dunning_events"]) == (2, 6)
    assert counts["billing_audit_log"] == 3


def test_a_planner_whose_steps_do_not_follow_the_first_failure_is_refused(
    store: Any,
) -> None:
    def on_the_first_of_the_month(**kwargs: Any) -> list[Any]:
        steps = TimelinePlanner()(**kwargs)
        return [replace(s, due_at=s.due_at.replace(day=1)) for s in steps]

    plan = plan_event(failed(1), "api")
    with pytest.raises(StoreError, match="fixed delays") as refused:
        store.apply_event_plans([plan], planner=on_the_first_of_the_month, now=NOW)
    assert "BILLING_CONFIG" in (refused.value.hint or "")
    assert not store.event_processed(plan.event_id)


def test_two_workers_settling_at_once_through_rest_agree_on_the_earliest_settlement(
    store: Any, postgrest: Any, owner: PostgresStore
) -> None:
    """Two requests apply the invoice's two settling events at the same moment, the later
    one committing first: the earlier one, waiting on the invoice's row inside its
    function, still takes the credit for what the later one resolved and canceled."""
    from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery

    apply_events(store, [failed(1)], source="webhook", now=NOW)
    obj = full_invoice(invoice_id(1), status="paid", created=T0 - 3600 + 1)
    earlier = event("evt_1QpL8ILkdIwHu7ixAa1sUcc2", "invoice.paid", obj, T0 + 86_400)
    later = event("evt_1QpL8ILkdIwHu7ixZz9pAid1", "invoice.payment_succeeded", obj, T0 + 86_400)

    def waiting(count: int) -> None:
        """Until ``count`` sessions wait for a lock (polled, no fixed sleep)."""
        while True:
            ((found,),) = postgrest.sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if found >= count:
                return

    def settle(settling: dict[str, Any]) -> None:
        plan = plan_event(settling, "webhook")
        store.rest.apply_event_plans([plan], planner=TimelinePlanner(), now=NOW)

    with psycopg.connect(postgrest.database_url) as blocker:
        blocker.execute("SELECT 1 FROM billing_invoices WHERE id = %s FOR UPDATE", (invoice_id(1),))
        workers = [threading.Thread(target=settle, args=(e,)) for e in (later, earlier)]
        workers[0].start()
        waiting(1)  # the later settlement queues first for the invoice's row
        workers[1].start()
        waiting(2)
    for worker in workers:
        worker.join(timeout=30)
    (alert,) = owner.list_alerts(AlertQuery(statuses=None, limit=None))
    assert (alert.status, alert.resolution) == ("resolved", f"invoice paid ({earlier['id']})")
    steps = owner.list_steps(invoice_id=invoice_id(1), limit=None)
    assert {(s.status, s.reason) for s in steps} == {("canceled", alert.resolution)}
    assert owner.get_invoice(invoice_id(1)).status == "paid"


_IDS = st.sampled_from(["di_1QpL8HLkdIwHu7ixQ4rT", "di_1QpL8HLkdIwHu7ixZ9wX", "", "di_0"])
_DISCOUNT = st.one_of(
    _IDS,
    st.fixed_dictionaries(
        {"id": st.one_of(_IDS, st.none(), st.integers(0, 2))},
        optional={"coupon": st.fixed_dictionaries({"percent_off": st.integers(1, 100)})},
    ),
    st.integers(0, 3),
)
_DISCOUNTS = st.one_of(st.lists(_DISCOUNT, max_size=4), _IDS, st.none())


def _holder() -> Any:
    return st.fixed_dictionaries({}, optional={"discounts": _DISCOUNTS, "plan": st.just("p")})


_SUBSCRIPTIONS = st.fixed_dictionaries(
    {"id": st.just("sub_1QpL7xLkdIwHu7ixWq3bN2Zs")},
    optional={
        "discounts": _DISCOUNTS,
        "items": st.one_of(
            st.fixed_dictionaries(
                {"object": st.just("list")},
                optional={"data": st.one_of(st.lists(st.one_of(_holder(), _IDS), max_size=3))},
            ),
            st.none(),
        ),
    },
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event_shape=_SUBSCRIPTIONS, previous=_SUBSCRIPTIONS)
def test_known_discounts_are_kept_as_the_domain_keeps_them(
    postgrest: Any, supabase_store: Any, event_shape: dict[str, Any], previous: dict[str, Any]
) -> None:
    """billing_api_mirror_with_known_discounts, called directly on PostgreSQL, against
    domain.mirror.with_known_discounts on subscriptions of every shape."""
    import json

    from cloudgreet_billing.domain.mirror import unexpanded_discount_ids, with_known_discounts

    ((merged, lists_ids),) = postgrest.sql(
        "SELECT billing_api_mirror_with_known_discounts(%s::jsonb, %s::jsonb), "
        "billing_api_mirror_lists_discount_ids(%s::jsonb)",
        (json.dumps(event_shape), json.dumps(previous), json.dumps(event_shape)),
    )
    assert merged == with_known_discounts(event_shape, previous)
    if not unexpanded_discount_ids(event_shape):
        # Read only when the event lists an id; then nothing would change anyway.
        assert not lists_ids or merged == event_shape
