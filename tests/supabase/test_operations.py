"""Quarantine, drift and actions through the Supabase REST store: the same answers and the
same rows as the PostgreSQL store.

Each test seeds two fresh databases the same way (as their owner, through the SQL store),
runs one operation through the SQL store on one (``twin``) and through the REST store, the
real ``supabase`` client and the PostgREST stand-in on the other, then compares what the
operation returned and every row of every billing table. Ids and times match too: both
databases start empty and the clock is injected."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloudgreet_billing.adapters.store.migrations import TABLES
from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.adapters.store.supabase.errors import DataRefused
from cloudgreet_billing.domain.dunning import StepDraft, TimelinePlanner
from cloudgreet_billing.domain.events import plan_event
from cloudgreet_billing.domain.mirror import parse_invoice, parse_subscription
from cloudgreet_billing.domain.quarantine import reject
from cloudgreet_billing.errors import BadInput, NotFound, Unavailable
from tests.postgrest.server import Fault

pytestmark = pytest.mark.postgres

INVOICE_ID = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
CUSTOMER_ID = "cus_RBb4YfBHdVkQ2x"
SUBSCRIPTION_ID = "sub_1QpL7vLkdIwHu7ixJ3cWbq1N"
CREATED = 1_763_900_000
OBSERVED = datetime.fromtimestamp(CREATED, UTC)
NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
RETRY_KEY = f"cloudgreet-billing:retry:{INVOICE_ID}:attempt-2"


def invoice(
    status: str = "open",
    *,
    invoice_id: str = INVOICE_ID,
    attempt_count: int = 1,
    created: int = CREATED,
) -> dict[str, Any]:
    """An invoice as Stripe sends it (API reference, the invoice object), nulls included."""
    paid = 12_900 if status == "paid" else 0
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": CUSTOMER_ID,
        "customer_email": "ap@acme-dental.example",
        "customer_name": "Acme Dental",
        "customer_phone": None,
        "status": status,
        "currency": "usd",
        "amount_due": 12_900,
        "amount_paid": paid,
        "amount_remaining": 12_900 - paid,
        "total": 12_900,
        "total_excluding_tax": 12_900,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "collection_method": "charge_automatically",
        "created": created,
        "due_date": None,
        "next_payment_attempt": None if status == "paid" else created + 3 * 86_400,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1Nv0FGQ9RKHgCVdK/{invoice_id}",
        "livemode": False,
        "number": "CG-0042",
        "status_transitions": {"finalized_at": created, "paid_at": None},
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": SUBSCRIPTION_ID, "metadata": {}},
        },
    }


def subscription(status: str = "active", *, period_end: int = CREATED + 30 * 86_400) -> dict:
    return {
        "id": SUBSCRIPTION_ID,
        "object": "subscription",
        "customer": CUSTOMER_ID,
        "status": status,
        "currency": "usd",
        "cancel_at_period_end": False,
        "current_period_end": period_end,
        "pause_collection": None,
        "livemode": False,
        "created": CREATED - 90 * 86_400,
        "discounts": [],
        "items": {"object": "list", "data": []},
    }


def seed_alert(store: PostgresStore, alert_type: str = "invoice_failed") -> int:
    """An invoice_failed alert as event processing opens it, with its three steps."""
    with store._transaction():
        row = store._execute(
            "INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id, "
            "amount_due, currency, attempt_count, created_at, updated_at) "
            "VALUES (?, 'open', ?, ?, ?, 12900, 'usd', 1, ?, ?) RETURNING id",
            (alert_type, f"{alert_type}:{INVOICE_ID}", CUSTOMER_ID, INVOICE_ID, OBSERVED, OBSERVED),
        ).fetchone()
    assert row is not None
    alert_id = int(row[0])
    store.schedule_steps(
        [
            StepDraft(
                INVOICE_ID,
                CUSTOMER_ID,
                alert_id,
                day,
                channel,
                f"day{day}_{channel}",
                OBSERVED + timedelta(days=day),
            )
            for day, channel in ((0, "email"), (1, "sms"), (3, "email"))
        ],
        OBSERVED,
    )
    return alert_id


def seed_mirror(store: PostgresStore) -> None:
    store.upsert_invoice(parse_invoice(invoice()), OBSERVED, OBSERVED)
    store.upsert_subscription(parse_subscription(subscription()), OBSERVED, OBSERVED)


def seed_quarantine(store: PostgresStore, count: int = 3) -> None:
    rejected = [
        reject(
            {
                "id": f"evt_1QpL8ILkdIwHu7ixAbCdEf{n:02d}",
                "object": "event",
                "type": "invoice.payment_failed",
                "created": CREATED + n,
                "livemode": False,
                "data": {"object": {"id": INVOICE_ID, "amount_due": [1]}},
            },
            "invoice field amount_due is not an integer",
            "webhook",
        )
        for n in range(count)
    ]
    store.apply_event_plans([], planner=TimelinePlanner(), now=OBSERVED, rejected=rejected)


def snapshot(database_url: str) -> dict[str, list[str]]:
    """Every row of every billing table, as JSON text, in a stable order."""
    with psycopg.connect(database_url) as conn:
        return {
            table: [
                row[0]
                for row in conn.execute(f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")  # noqa: S608
            ]
            # The schema's own rows say when each database was made.
            for table in TABLES
            if table != "billing_schema_version"
        }


@dataclass
class Twins:
    """The SQL store on one database, the REST store on another, seeded alike; ``owner``
    is the SQL store on the REST store's database, which seeds it and reads what the other
    areas' operations read."""

    sql: PostgresStore
    sql_url: str
    rest: Any
    rest_url: str
    owner: PostgresStore

    def seed(self, *steps: Callable[[PostgresStore], Any]) -> list[Any]:
        made = []
        for step in steps:
            made.append(step(self.sql))
            assert step(self.owner) == made[-1]
        return made

    def same(self, operation: Callable[[Any], Any]) -> Any:
        """Run ``operation`` on both stores; both answer, or fail, alike, and leave the same
        rows. Returns the answer (or the error)."""
        answers = []
        for store in (self.sql, self.rest):
            try:
                answers.append(operation(store))
            except Exception as exc:
                answers.append(exc)
        by_sql, by_rest = answers
        if isinstance(by_sql, Exception):
            assert type(by_rest) is type(by_sql), by_rest
            assert (str(by_rest), by_rest.hint, by_rest.code) == (
                str(by_sql),
                by_sql.hint,
                by_sql.code,
            )
        else:
            assert by_rest == by_sql
        assert snapshot(self.rest_url) == snapshot(self.sql_url)
        return by_sql


@pytest.fixture
def twins(supabase_store: Any, postgrest: Any, postgres_server: str) -> Iterator[Twins]:
    name = f"billing_twin_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    sql_url = f"{postgres_server.rpartition('/')[0]}/{name}"
    sql = PostgresStore(sql_url)
    sql.migrate()
    owner = PostgresStore(postgrest.database_url)
    try:
        yield Twins(sql, sql_url, supabase_store, postgrest.database_url, owner)
    finally:
        sql.close()
        owner.close()
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pages of 40 rows, so that reads of a hundred rows take several requests (every
    billing_api_ read returns one jsonb value, which db-max-rows does not cap)."""
    from cloudgreet_billing.adapters.store.supabase import operations

    monkeypatch.setattr(operations, "PAGE_SIZE", 40)
    return 40


def audit(action: str, outcome: str, **details: Any) -> AuditDraft:
    return AuditDraft("alice@ops", action, INVOICE_ID, outcome, RETRY_KEY, details)


# --- actions ------------------------------------------------------------------------------


def test_a_paid_retry_resolves_the_alert_and_cancels_the_steps(twins):
    twins.seed(seed_mirror, seed_alert)
    paid = parse_invoice(invoice("paid", attempt_count=2))
    settled = twins.same(
        lambda store: store.settle_paid_invoice(
            paid, resolution="paid by retry", audit=audit("retry", "paid"), now=NOW
        )
    )
    assert settled.resolved_alert_ids == (1,)
    assert settled.canceled_steps == 3
    line = twins.rest.action_audit(INVOICE_ID, "retry")[-1]
    assert line.details == {"resolved_alerts": [1], "canceled_steps": 3}
    assert twins.owner.get_invoice(INVOICE_ID).status == "paid"


def test_settling_twice_changes_nothing_more_than_the_audit(twins):
    twins.seed(seed_mirror, seed_alert)
    paid = parse_invoice(invoice("paid", attempt_count=2))
    for _ in range(2):
        twins.same(
            lambda store: store.settle_paid_invoice(
                paid, resolution="paid by retry", audit=audit("retry", "paid"), now=NOW
            )
        )
    second = twins.rest.action_audit(INVOICE_ID, "retry")[-1]
    assert second.details == {"resolved_alerts": [], "canceled_steps": 0}


def test_a_stale_open_invoice_does_not_reopen_a_paid_one(twins):
    twins.seed(seed_mirror)
    twins.same(
        lambda store: store.settle_paid_invoice(
            parse_invoice(invoice("paid", attempt_count=2)),
            resolution="paid by retry",
            audit=audit("retry", "paid"),
            now=NOW,
        )
    )
    # A drift repair that read Stripe a moment earlier, answered later.
    repaired = twins.same(
        lambda store: store.repair_invoice(
            parse_invoice(invoice("open", attempt_count=3)),
            settle=None,
            audit=audit("sync.verify.repair", "repaired"),
            now=NOW + timedelta(seconds=1),
        )
    )
    assert repaired.status == "paid"
    assert repaired.attempt_count == 3  # the count never falls, and rises


def test_a_decline_counts_the_attempt_and_notes_the_alert(twins):
    _, alert_id = twins.seed(seed_mirror, seed_alert)
    for attempt_count in (1, 1, 5):
        twins.same(
            lambda store, n=attempt_count: store.record_failed_attempt(
                alert_id,
                attempt_count=n,
                failure="card_declined: insufficient_funds",
                note="retry declined: insufficient_funds",
                audit=audit("retry", "declined"),
                now=NOW,
            )
        )
    alert = twins.owner.get_alert(alert_id)
    assert alert.attempt_count == 5
    assert alert.last_failure == "card_declined: insufficient_funds"


def test_a_decline_without_an_alert_writes_only_the_audit_line(twins):
    twins.seed(seed_mirror)
    twins.same(
        lambda store: store.record_failed_attempt(
            None,
            attempt_count=2,
            failure="card_declined",
            note="unused",
            audit=audit("retry", "declined"),
            now=NOW,
        )
    )
    assert [line.outcome for line in twins.rest.action_audit(INVOICE_ID, "retry")] == ["declined"]


def test_an_action_required_alert_is_opened_once_then_added_to(twins):
    twins.seed(seed_mirror)
    needs_action = parse_invoice(invoice("open", attempt_count=2))
    ids = [
        twins.same(
            lambda store, at=at: store.open_action_required_alert(
                needs_action,
                failure="invoice_payment_intent_requires_action",
                note="the customer must complete 3D Secure",
                audit=audit("retry", "requires_action"),
                now=at,
            )
        )
        for at in (NOW, NOW + timedelta(minutes=5))
    ]
    assert ids[0] == ids[1]
    opened = [
        line for line in twins.owner.audit_trail(f"alert:{ids[0]}") if line.action == "alert.open"
    ]
    assert len(opened) == 1


def test_a_note_with_and_without_an_alert(twins):
    _, alert_id = twins.seed(seed_mirror, seed_alert)
    for target in (alert_id, None, 999):
        twins.same(
            lambda store, t=target: store.note_alert(
                t,
                author="alice@ops",
                body="sent the pay link again",
                audit=audit("resend-link", "sent"),
                now=NOW,
            )
        )


def test_action_audit_reads_more_lines_than_the_cap(twins, postgrest, small_pages):
    postgrest.max_rows = 50
    twins.seed(seed_mirror)
    for n in range(120):
        twins.owner.append_audit(audit("portal", "created", n=n), NOW + timedelta(seconds=n % 7))
        twins.sql.append_audit(audit("portal", "created", n=n), NOW + timedelta(seconds=n % 7))
    lines = twins.same(lambda store: store.action_audit(INVOICE_ID, "portal"))
    assert len(lines) == 120
    assert [line.occurred_at for line in lines] == sorted(line.occurred_at for line in lines)
    assert len(postgrest.requests_to("^/rpc/billing_api_action_audit", "POST")) == 4


# --- drift --------------------------------------------------------------------------------


def test_repairing_an_invoice_settles_its_alerts_and_steps(twins):
    twins.seed(seed_mirror, seed_alert)
    repaired = twins.same(
        lambda store: store.repair_invoice(
            parse_invoice(invoice("void", attempt_count=1)),
            settle="voided in Stripe",
            audit=audit("sync.verify.repair", "repaired"),
            now=NOW,
        )
    )
    assert repaired.status == "void"
    assert [step.status for step in twins.owner.list_steps(invoice_id=INVOICE_ID)] == [
        "canceled"
    ] * 3


def test_repairing_an_invoice_the_mirror_never_had(twins):
    other = "in_1QpL9ZLkdIwHu7ixQm2RtY7u"
    repaired = twins.same(
        lambda store: store.repair_invoice(
            parse_invoice(invoice("open", invoice_id=other)),
            settle=None,
            audit=audit("sync.verify.repair", "added"),
            now=NOW,
        )
    )
    assert repaired.id == other


def test_repairing_a_subscription_only_moves_it_forward(twins):
    twins.seed(seed_mirror)
    canceled = twins.same(
        lambda store: store.repair_subscription(
            parse_subscription(subscription("canceled")),
            audit=audit("sync.verify.repair", "repaired"),
            now=NOW,
        )
    )
    assert canceled.status == "canceled"
    # An active copy read later does not revive a canceled subscription (terminal first).
    still = twins.same(
        lambda store: store.repair_subscription(
            parse_subscription(subscription("active")),
            audit=audit("sync.verify.repair", "repaired"),
            now=NOW + timedelta(hours=1),
        )
    )
    assert still.status == "canceled"


def test_the_drift_reads_lose_nothing_past_the_cap(twins, postgrest, small_pages):
    postgrest.max_rows = 50

    def many(store: PostgresStore) -> None:
        for n in range(130):
            parsed = parse_invoice(
                invoice(invoice_id=f"in_1QpL8HLkdIwHu7ix{n:08d}", created=CREATED + n * 60)
            )
            store.upsert_invoice(parsed, OBSERVED, OBSERVED)
        store.upsert_subscription(parse_subscription(subscription()), OBSERVED, OBSERVED)

    twins.seed(many)
    since = datetime.fromtimestamp(CREATED + 10 * 60, UTC)
    until = datetime.fromtimestamp(CREATED + 125 * 60, UTC)
    found = twins.same(lambda store: store.mirrored_invoices_created(since, until))
    assert len(found) == 115
    assert found[f"in_1QpL8HLkdIwHu7ix{10:08d}"].raw["number"] == "CG-0042"
    subscriptions = twins.same(lambda store: store.mirrored_subscriptions())
    assert list(subscriptions) == [SUBSCRIPTION_ID]
    # 115 rows in pages of 40, then the empty page that ends the read.
    assert len(postgrest.requests_to("^/rpc/billing_api_mirrored_invoices_created", "POST")) == 4


# --- quarantine ---------------------------------------------------------------------------


def test_quarantine_reads_match_the_sql_store(twins, postgrest, small_pages):
    postgrest.max_rows = 50
    twins.seed(lambda store: seed_quarantine(store, 120))
    everything = twins.same(lambda store: store.list_quarantined(limit=None))
    assert len(everything) == 120
    assert twins.same(lambda store: store.list_quarantined()) == everything[:50]
    assert (
        twins.same(lambda store: store.list_quarantined(limit=70, after=30)) == everything[30:100]
    )
    one = twins.same(lambda store: store.list_quarantined(event_id=everything[7].event_id))
    assert one == [everything[7]]
    assert twins.same(lambda store: store.get_quarantined(everything[7].id)) == everything[7]
    assert twins.same(lambda store: store.get_quarantined(10_000)) is None
    assert twins.same(lambda store: store.count_quarantined()) == 120
    assert twins.same(lambda store: store.count_quarantined(None)) == 120
    assert twins.same(lambda store: store.list_quarantined(statuses=("dismissed",))) == []


def test_dismissing_keeps_the_row_and_audits_it(twins):
    twins.seed(seed_quarantine)
    dismissed = twins.same(
        lambda store: store.dismiss_quarantined(
            1, reason="a test event", actor="alice@ops", now=NOW
        )
    )
    assert (dismissed.status, dismissed.resolution, dismissed.resolved_by) == (
        "dismissed",
        "a test event",
        "alice@ops",
    )
    assert twins.same(lambda store: store.count_quarantined(("dismissed",))) == 1
    assert (
        twins.same(lambda store: store.list_quarantined(statuses=None, limit=None))[0] == dismissed
    )
    again = twins.same(
        lambda store: store.dismiss_quarantined(1, reason=None, actor="bob@ops", now=NOW)
    )
    assert isinstance(again, BadInput) and again.code == "already_settled"
    missing = twins.same(
        lambda store: store.dismiss_quarantined(404, reason=None, actor="bob@ops", now=NOW)
    )
    assert isinstance(missing, NotFound)


FAILED_EVENT_ID = "evt_1QpL8ILkdIwHu7ixAbCdEf00"


def failed_event(**fields: Any) -> dict[str, Any]:
    """invoice.payment_failed as Stripe sends it, the invoice whole."""
    return {
        "id": FAILED_EVENT_ID,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "type": "invoice.payment_failed",
        "created": CREATED,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": {**invoice("open"), **fields}},
    }


def retry(store: Any, attempt: Any, quarantine_id: int = 1) -> Any:
    return store.retry_quarantined(
        quarantine_id, attempt, planner=TimelinePlanner(), now=NOW, actor="alice@ops"
    )


def test_a_retry_still_refused_keeps_the_event_with_todays_reason(twins):
    twins.seed(seed_quarantine)
    still_bad = reject(failed_event(amount_due=[1]), "amount_due is still a list", "webhook")
    result = twins.same(lambda store: retry(store, still_bad))
    assert (result.status, result.error, result.quarantine_id) == (
        "quarantined",
        "amount_due is still a list",
        1,
    )
    row = twins.rest.get_quarantined(1)
    assert (row.status, row.reason) == ("quarantined", "amount_due is still a list")
    missing = twins.same(lambda store: retry(store, still_bad, quarantine_id=404))
    assert isinstance(missing, NotFound)


def test_a_fixed_event_is_applied_by_retry_and_leaves_quarantine(twins):
    twins.seed(seed_mirror, seed_quarantine)
    fixed = plan_event(failed_event(), "webhook")
    result = twins.same(lambda store: retry(store, fixed))
    assert (result.status, result.alerts_opened, result.quarantine_id) == ("applied", 1, 1)
    assert twins.rest.get_quarantined(1).resolution == "applied by retry"


def test_a_retry_of_an_event_processed_meanwhile_is_a_duplicate(twins):
    def processed(store: PostgresStore) -> None:
        seed_quarantine(store)
        store.apply_event_plans(
            [plan_event(failed_event(), "api")], planner=TimelinePlanner(), now=OBSERVED
        )

    twins.seed(seed_mirror, processed)
    fixed = plan_event(failed_event(), "webhook")
    result = twins.same(lambda store: retry(store, fixed))
    assert result.status == "duplicate"
    assert twins.rest.get_quarantined(1).resolution == "already processed"


# --- one transaction per call -------------------------------------------------------------


def test_a_call_that_fails_part_way_writes_nothing(twins):
    _, alert_id = twins.seed(seed_mirror, seed_alert)
    before = snapshot(twins.rest_url)
    # The alert's count is raised first; the note then breaks billing_alert_notes' CHECK
    # (a note has a body), and the whole call is rolled back.
    with pytest.raises(DataRefused) as refused:
        twins.rest.record_failed_attempt(
            alert_id,
            attempt_count=4,
            failure="card_declined",
            note="",
            audit=audit("retry", "declined"),
            now=NOW,
        )
    assert refused.value.sqlstate == "23514"
    assert snapshot(twins.rest_url) == before


def test_two_operators_dismissing_one_event_settle_it_once(twins, postgrest):
    """The function called directly on PostgreSQL, as PostgREST runs it: the first call's
    row lock makes the second wait, then see the row settled."""
    twins.seed(seed_quarantine)
    dismiss = "SELECT billing_api_dismiss_quarantined(1, %s, %s, %s)"
    with psycopg.connect(postgrest.database_url) as first:
        held = first.execute(dismiss, ("a test event", "alice@ops", NOW)).fetchone()
        assert held is not None and held[0]["outcome"] == "dismissed"
        answers: list[Any] = []

        def second() -> None:
            with psycopg.connect(postgrest.database_url) as other:
                answers.append(other.execute(dismiss, (None, "bob@ops", NOW)).fetchone())

        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(timeout=1)
        assert waiting.is_alive()  # blocked on the row lock
        first.commit()
        waiting.join(timeout=10)
    assert answers == [({"outcome": "already_settled", "status": "dismissed"},)]
    dismissals = [
        line
        for line in twins.owner.audit_trail("quarantine:1")
        if line.action == "quarantine.dismiss"
    ]
    assert [line.actor for line in dismissals] == ["alice@ops"]


def test_times_come_back_in_utc_whatever_the_projects_time_zone(twins, postgrest):
    postgrest.sql("ALTER ROLE service_role SET timezone = 'America/New_York'")
    try:
        twins.seed(seed_quarantine)
        row = twins.rest.get_quarantined(1)
        assert row.first_seen_at == OBSERVED
        assert row.first_seen_at.utcoffset() == timedelta(0)
        assert row == twins.sql.get_quarantined(1)
    finally:
        postgrest.sql("ALTER ROLE service_role RESET timezone")


def test_an_answer_lost_after_the_commit_is_safe_to_send_again(twins, postgrest):
    """postgrest-py never retries a POST: a settlement whose answer is lost is the caller's
    to repeat, and repeating it leaves what settling twice leaves on the SQL store."""
    twins.seed(seed_mirror, seed_alert)
    paid = parse_invoice(invoice("paid", attempt_count=2))

    def settle(store: Any) -> Any:
        return store.settle_paid_invoice(
            paid, resolution="paid by retry", audit=audit("retry", "paid"), now=NOW
        )

    settle(twins.sql)
    postgrest.inject(
        Fault(
            method="POST",
            path="^/rpc/billing_api_settle_paid_invoice",
            drop=True,
            after_commit=True,
        )
    )
    with pytest.raises(Unavailable, match="cannot reach Supabase"):
        settle(twins.rest)
    again = twins.same(settle)
    assert again.resolved_alert_ids == ()
    assert [
        line.details["resolved_alerts"] for line in twins.rest.action_audit(INVOICE_ID, "retry")
    ] == [[1], []]


def failure_columns(store: PostgresStore) -> tuple[Any, ...]:
    row = store._execute(
        "SELECT first_failed_at, last_failure_code, last_failure_message, last_failure_attempt, "
        "last_failure_at, last_failure_event_id FROM billing_invoices WHERE id = ?",
        (INVOICE_ID,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_manual_decline_is_recorded_on_the_invoice_as_a_failure_observed_now(twins):
    from cloudgreet_billing.domain.events import InvoiceFailure

    _, alert_id = twins.seed(seed_mirror, seed_alert)
    declined = InvoiceFailure("card_declined", "Your card has insufficient funds.")

    def decline(attempt_count: int, at: datetime, note: str = "retry declined") -> None:
        twins.rest.record_failed_attempt(
            alert_id,
            attempt_count=attempt_count,
            failure="card_declined: insufficient_funds",
            note=note,
            audit=audit("retry", "declined"),
            now=at,
            declined=(INVOICE_ID, declined),
        )

    decline(2, NOW)
    assert failure_columns(twins.owner) == (
        NOW, "card_declined", "Your card has insufficient funds.", 2, NOW, "",
    )  # fmt: skip
    # A lower attempt count observed later is an older failure: the last one stays.
    decline(1, NOW + timedelta(hours=1))
    assert failure_columns(twins.owner)[1:4] == (
        "card_declined", "Your card has insufficient funds.", 2,
    )  # fmt: skip
    # All or nothing: a note the database refuses takes the recorded failure with it.
    before = snapshot(twins.rest_url)
    with pytest.raises(DataRefused):
        decline(5, NOW + timedelta(hours=2), note="")
    assert snapshot(twins.rest_url) == before


def test_a_retry_and_a_dismissal_at_once_settle_the_row_one_after_the_other(twins, postgrest):
    """Both functions take the row lock first: a dismissal sent while a retry holds it
    waits, then sees what the retry left (still quarantined, with today's reason)."""
    twins.seed(seed_quarantine)
    with psycopg.connect(postgrest.database_url) as first:
        kept = first.execute(
            "SELECT billing_api_retry_quarantined(1, %s, NULL, %s, %s, %s)",
            (FAILED_EVENT_ID, "amount_due is still a list", "alice@ops", NOW),
        ).fetchone()
        assert kept is not None and kept[0]["status"] == "quarantined"
        answers: list[Any] = []

        def dismiss() -> None:
            with psycopg.connect(postgrest.database_url) as other:
                answers.append(
                    other.execute(
                        "SELECT billing_api_dismiss_quarantined(1, %s, %s, %s)",
                        ("given up", "bob@ops", NOW),
                    ).fetchone()[0]["outcome"]
                )

        waiting = threading.Thread(target=dismiss)
        waiting.start()
        waiting.join(timeout=1)
        assert waiting.is_alive()
        first.commit()
        waiting.join(timeout=10)
    assert answers == ["dismissed"]
    row = twins.rest.get_quarantined(1)
    assert (row.status, row.reason, row.resolution) == (
        "dismissed",
        "amount_due is still a list",
        "given up",
    )
