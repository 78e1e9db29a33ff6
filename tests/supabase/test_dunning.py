"""Alerts and dunning through the Supabase REST store: concurrent runs, leases, listings
larger than PostgREST's row cap, atomic and repeated writes, and the claim function
called directly on PostgreSQL by concurrent sessions.

The data is seeded by the project's owner through the PostgreSQL store (as the mirror
would have written it), then read and changed through the real ``supabase`` client and
the PostgREST stand-in; the owner's SQL store reads the same rows back as the reference.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloudgreet_billing.adapters.notify.email_smtp import SmtpEmailSender
from cloudgreet_billing.adapters.notify.sms_console import ConsoleSmsSender
from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.adapters.store.sql_dunning import REVIEW_CONFIRMED, REVIEW_UNCONFIRMED
from cloudgreet_billing.adapters.store.supabase import dunning as supabase_dunning
from cloudgreet_billing.adapters.store.supabase.client import SupabaseApi
from cloudgreet_billing.adapters.store.supabase.errors import DataRefused
from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore
from cloudgreet_billing.domain.alerts import AlertDraft
from cloudgreet_billing.domain.dunning import (
    DunningConfig,
    EscalationCandidate,
    StepDraft,
    StepOutcome,
    TimelinePlanner,
)
from cloudgreet_billing.domain.ledger import make_draft
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice
from cloudgreet_billing.errors import ConfigError, Unavailable
from cloudgreet_billing.services.dunning.messages import MessageBook
from cloudgreet_billing.services.dunning.run import Channels, run_dunning
from tests.dunning.conftest import SmtpSink, serving
from tests.dunning.stripe_objects import customer_object, invoice_object

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)
CUSTOMER = "cus_RkS5AtmBK5hCeq"


def invoice_id(n: int) -> str:
    """An id of Stripe's real length (27 characters)."""
    return f"in_1QpL8HLkdIwHu7ixl4O{n:05d}"


@pytest.fixture
def owner(supabase_store: SupabaseStore, postgrest: Any) -> Iterator[PostgresStore]:
    """The project's owner on the same database: seeds the mirror, and is the reference."""
    store = PostgresStore(postgrest.database_url)
    yield store
    store.close()


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    with serving(SmtpSink()) as sink:
        yield sink


def own_client(postgrest: Any) -> SupabaseStore:
    """A store on a client of its own, as a separate process would have."""
    store = SupabaseStore(postgrest.url, postgrest.keys.secret)
    store._api = SupabaseApi(postgrest.url, postgrest.keys.secret)
    return store


def seed_invoices(owner: PostgresStore, count: int, *, first_failed_at: datetime = NOW) -> None:
    """``count`` open invoices of one customer, failed at ``first_failed_at``, with their
    three-step timelines scheduled (only day 0 is due at that moment)."""
    owner.upsert_customer(parse_customer(customer_object(customer_id=CUSTOMER)), NOW, NOW)
    invoices = [
        dataclasses.replace(
            parse_invoice(
                invoice_object(
                    invoice_id=invoice_id(n),
                    customer_id=CUSTOMER,
                    finalized_at=first_failed_at - timedelta(hours=1),
                )
            ),
            first_failed_at=first_failed_at,
        )
        for n in range(count)
    ]
    owner.upsert_invoices(invoices, NOW, NOW)
    planner = TimelinePlanner()
    drafts = [
        draft
        for invoice in invoices
        for draft in planner(
            invoice_id=invoice.id,
            customer_id=CUSTOMER,
            alert_id=None,
            first_failed_at=first_failed_at,
        )
    ]
    owner.schedule_steps(drafts, NOW)


# --- concurrent runs ------------------------------------------------------------------


def test_four_concurrent_runs_through_rest_send_each_step_exactly_once(
    postgrest: Any, owner: PostgresStore, smtp_server: SmtpSink
) -> None:
    seed_invoices(owner, 240)
    due = {s.id for s in owner.list_steps(statuses=("scheduled",), limit=None) if s.day == 0}
    assert len(due) == 240
    summaries: list[Any] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        store = own_client(postgrest)
        email = SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test")
        try:
            start.wait()
            summaries.append(
                run_dunning(
                    store,
                    Channels(email=email, sms=ConsoleSmsSender()),
                    DunningConfig(),
                    MessageBook(),
                    actor="cron",
                    clock=lambda: NOW + timedelta(minutes=5),
                    # Small claims, so the four runs interleave many times.
                    batch_size=15,
                )
            )
        except BaseException as exc:
            failures.append(exc)
        finally:
            email.close()
            store._api.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not failures, failures

    received = Counter(smtp_server.step_ids())
    assert set(received) == due
    assert set(received.values()) == {1}, "a step was delivered twice"
    assert sum(s.sent for s in summaries) == sum(s.due for s in summaries) == 240
    assert len({s.run_id for s in summaries}) == 4
    assert all(s.needs_review == 0 and not s.errors for s in summaries)
    steps = owner.list_steps(statuses=None, limit=None)
    assert {s.status for s in steps if s.day == 0} == {"sent"}
    assert {s.status for s in steps if s.day > 0} == {"scheduled"}
    # Every claim was one POST /rpc/billing_api_claim_due_steps: at least 240 / 15 of them
    # found work, and each run's last one found none.
    claims = postgrest.requests_to("^/rpc/billing_api_claim_due_steps$", "POST")
    assert len(claims) >= 240 // 15 + 4


# --- leases ---------------------------------------------------------------------------


def test_a_lease_expiry_puts_a_stuck_step_into_needs_review(
    postgrest: Any, owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    seed_invoices(owner, 3)
    crashed = own_client(postgrest)
    claimed = crashed.claim_due_steps(
        now=NOW, lease_until=NOW + LEASE, run_id="host-a:4242:dead", limit=10
    )
    assert [c.step.day for c in claimed] == [0, 0, 0]
    first, second, third = (c.step.id for c in claimed)
    # The crashed run had confirmed the first message (it may have gone out) and finished
    # the third; the second it never handed over.
    assert crashed.confirm_sends([first], "host-a:4242:dead", NOW, NOW + LEASE) == {first}
    assert (
        crashed.record_step_outcomes(
            [StepOutcome(third, "sent", provider_message_id="<dunning-3@cloudgreet.test>")],
            "host-a:4242:dead",
            NOW,
        )
        == 1
    )

    assert supabase_store.expire_leases(NOW + LEASE) == 0, "a lease ends after its time"
    later = NOW + LEASE + timedelta(seconds=1)
    assert supabase_store.expire_leases(later) == 2
    assert supabase_store.expire_leases(later) == 0, "moved once"
    assert supabase_store.count_needs_review() == 2
    stuck = {s.id: s for s in supabase_store.list_steps(statuses=("needs_review",), limit=None)}
    assert (stuck[first].reason, stuck[second].reason) == (REVIEW_CONFIRMED, REVIEW_UNCONFIRMED)
    assert stuck[first].claimed_by == "host-a:4242:dead"

    # The next run sends neither and says two steps wait for a person.
    summary = run_dunning(
        supabase_store,
        Channels(email=_RefusingEmail(), sms=ConsoleSmsSender()),
        DunningConfig(),
        MessageBook(),
        actor="cron",
        clock=lambda: later,
    )
    assert (summary.sent, summary.needs_review, summary.leases_expired) == (0, 2, 0)

    # The crashed run's message did go out after all: recorded as sent, not lost.
    assert (
        crashed.record_step_outcomes(
            [StepOutcome(first, "sent", provider_message_id="<dunning-1@cloudgreet.test>")],
            "host-a:4242:dead",
            later,
        )
        == 1
    )
    assert supabase_store.count_steps(statuses=("sent",)) == 2, "the third and this one"
    assert supabase_store.count_needs_review() == 1
    # A person requeues the one that never left: it is due again, with no claim.
    requeued = supabase_store.requeue_step(second, ("needs_review",), later)
    assert requeued is not None and (requeued.status, requeued.claimed_by) == ("scheduled", None)
    assert supabase_store.count_due_steps(later) == 1
    crashed._api.close()


def smtp_channels(sink: SmtpSink) -> Channels:
    email = SmtpEmailSender(f"smtp://127.0.0.1:{sink.port}", "billing@cloudgreet.test")
    return Channels(email=email, sms=ConsoleSmsSender())


def run_at(store: SupabaseStore, channels: Channels, moment: datetime) -> Any:
    return run_dunning(
        store, channels, DunningConfig(), MessageBook(), actor="cron", clock=lambda: moment
    )


def test_a_claim_whose_answer_is_lost_sends_nothing_twice(
    postgrest: Any,
    owner: PostgresStore,
    supabase_store: SupabaseStore,
    smtp_server: SmtpSink,
) -> None:
    from tests.postgrest.server import Fault

    seed_invoices(owner, 3)
    channels = smtp_channels(smtp_server)
    # The claim commits, then the connection drops: the run cannot know what it holds.
    postgrest.inject(
        Fault(method="POST", path="^/rpc/billing_api_claim_due_steps", drop=True, after_commit=True)
    )
    with pytest.raises(Unavailable):
        run_at(supabase_store, channels, NOW)
    assert supabase_store.count_steps(statuses=("sending",)) == 3
    assert run_at(supabase_store, channels, NOW + timedelta(minutes=5)).sent == 0
    expired = run_at(supabase_store, channels, NOW + LEASE + timedelta(minutes=1))
    assert (expired.sent, expired.leases_expired, expired.needs_review) == (0, 3, 3)
    stuck = supabase_store.list_steps(statuses=("needs_review",), limit=None)
    assert {s.reason for s in stuck} == {REVIEW_UNCONFIRMED}
    for step in stuck:
        supabase_store.requeue_step(step.id, ("needs_review",), NOW + LEASE)
    assert run_at(supabase_store, channels, NOW + 2 * LEASE).sent == 3
    received = Counter(smtp_server.step_ids())
    assert set(received) == {s.id for s in stuck} and set(received.values()) == {1}
    channels.email.close()


def test_a_confirmation_whose_answer_is_lost_gives_the_step_back_unsent(
    postgrest: Any,
    owner: PostgresStore,
    supabase_store: SupabaseStore,
    smtp_server: SmtpSink,
) -> None:
    from tests.postgrest.server import Fault

    seed_invoices(owner, 3)
    channels = smtp_channels(smtp_server)
    postgrest.inject(
        Fault(method="POST", path="^/rpc/billing_api_confirm_sends", drop=True, after_commit=True)
    )
    with pytest.raises(Unavailable):
        run_at(supabase_store, channels, NOW)
    assert smtp_server.step_ids() == [], "nothing is sent without a confirmation"
    # Every claimed step was given back (the one being confirmed never reached SMTP).
    assert supabase_store.count_steps(statuses=("scheduled",)) == 9
    assert run_at(supabase_store, channels, NOW + timedelta(minutes=5)).sent == 3
    assert set(Counter(smtp_server.step_ids()).values()) == {1}
    channels.email.close()


class _RefusingEmail:
    """No message may be sent in this test."""

    def send(self, email: Any) -> str:
        raise AssertionError(f"sent {email!r}")


# --- listings past the cap ------------------------------------------------------------


def test_listings_larger_than_the_cap_lose_nothing(
    postgrest: Any,
    owner: PostgresStore,
    supabase_store: SupabaseStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    postgrest.max_rows = 50
    # Pages at the cap, so that every listing needs several of them.
    monkeypatch.setattr(supabase_dunning, "PAGE_SIZE", 50)
    seed_invoices(owner, 45, first_failed_at=NOW - timedelta(days=4))  # 135 steps, all due
    # 120 alerts, 40 of each created in the same microsecond: the page key must break ties.
    for n in range(120):
        owner.raise_alert(
            AlertDraft(
                type="invoice_failed",
                dedupe_key=f"invoice_failed:{invoice_id(n)}",
                customer_id=CUSTOMER,
                invoice_id=invoice_id(n),
                amount_due=14900,
                currency="usd",
                attempt_count=1,
            ),
            actor="sync",
            now=NOW + timedelta(hours=n // 40),
        )
    every = AlertQuery(statuses=None, limit=None)
    alerts = supabase_store.list_alerts(every)
    assert len(alerts) == len({a.id for a in alerts}) == 120
    assert alerts == owner.list_alerts(every)
    assert supabase_store.count_alerts(every) == 120
    assert supabase_store.list_alerts(AlertQuery(limit=70)) == alerts[:70]
    assert supabase_store.alerts_touched(NOW, NOW + timedelta(days=1)) == alerts[::-1]

    steps = supabase_store.list_steps(statuses=None, limit=None)
    assert len(steps) == len({s.id for s in steps}) == 135
    assert steps == owner.list_steps(statuses=None, limit=None)
    assert supabase_store.list_steps(limit=60) == steps[:60]
    assert supabase_store.count_steps() == 135
    assert supabase_store.count_due_steps(NOW) == 135
    due = supabase_store.due_steps(NOW, None)
    assert due == owner.due_steps(NOW, None)
    assert len(due) == 135 and sum(c.superseded for c in due) == 90
    reach = supabase_store.dunning_reach()
    assert reach == owner.dunning_reach() and len(reach) == 45
    some = [invoice_id(n) for n in range(0, 45, 2)]
    assert supabase_store.dunning_reach(some) == owner.dunning_reach(some)
    listing = postgrest.requests_to("^/rpc/billing_api_list_steps$", "POST")
    assert len(listing) >= 135 // 50 + 1, "the steps came in several pages"


# --- what the SQL stores answer, the REST store answers --------------------------------


def test_reads_match_the_sql_store_on_the_same_rows(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    seed_invoices(owner, 4, first_failed_at=NOW - timedelta(days=4))
    # An invoice that is not mirrored, and one settled: facts and reach must tell them apart.
    owner.schedule_steps(
        [StepDraft(invoice_id(90), CUSTOMER, None, 0, "email", "day0_email", NOW)], NOW
    )
    paid = parse_invoice(invoice_object(invoice_id=invoice_id(3), status="paid", finalized_at=NOW))
    owner.upsert_invoice(paid, NOW + timedelta(minutes=1), NOW)
    run = "host-b:7:cafe"
    claimed = supabase_store.claim_due_steps(
        now=NOW, lease_until=NOW + LEASE, run_id=run, limit=100
    )
    assert len(claimed) == 13
    ids = {c.step.id for c in claimed}
    settled = {c.step.id for c in claimed if c.step.invoice_id == invoice_id(3)}
    assert len(settled) == 3 and {c.invoice.status for c in claimed} == {"open", "paid", None}
    # A paid invoice's steps are not confirmed: their messages must not leave.
    assert supabase_store.confirm_sends(sorted(ids), run, NOW, None) == ids - settled
    first = [c.step.id for c in claimed if c.step.invoice_id == invoice_id(0)]
    assert (
        supabase_store.record_step_outcomes(
            [
                StepOutcome(first[0], "sent", provider_message_id="<a@cloudgreet.test>"),
                StepOutcome(first[1], "skipped", reason="superseded by day 3"),
                StepOutcome(first[2], "sent", provider_message_id="<b@cloudgreet.test>"),
            ],
            run,
            NOW,
        )
        == 3
    )
    assert supabase_store.release_claims(sorted(ids - set(first)), run, NOW) == 10
    for n in (0, 1, 3, 90):
        assert supabase_store.invoice_facts(invoice_id(n)) == owner.invoice_facts(invoice_id(n))
    assert supabase_store.invoice_facts(invoice_id(90)) is None
    assert supabase_store.dunning_reach() == owner.dunning_reach()
    assert supabase_store.due_steps(NOW, 5) == owner.due_steps(NOW, 5)
    candidates = supabase_store.escalation_candidates(3)
    assert candidates == owner.escalation_candidates(3)
    assert [c.invoice_id for c in candidates] == [invoice_id(0)]
    assert supabase_store.escalation_candidates(4) == []

    for n in range(3):
        owner.record_ledger_entry(
            make_draft(
                customer_id=CUSTOMER,
                kind="booking_fee",
                amount="2.50",
                currency=("usd", "usd", "eur")[n],
                occurred_at=f"2026-11-2{n}T10:00:00Z",
            ),
            NOW,
        )
    window = {"kind": "booking_fee", "since": NOW - timedelta(days=7), "until": NOW}
    totals = supabase_store.ledger_totals(**window)
    assert totals == owner.ledger_totals(**window)
    assert [(t.currency, t.amount, t.entries) for t in totals] == [("eur", 250, 1), ("usd", 500, 2)]
    assert supabase_store.ledger_created_window(NOW) == owner.ledger_created_window(NOW)
    assert supabase_store.ledger_created_window(NOW - timedelta(days=1)) is None


def test_alert_transitions_write_their_audit_rows_once(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    draft = AlertDraft(
        type="invoice_failed",
        dedupe_key=f"invoice_failed:{invoice_id(1)}",
        customer_id=CUSTOMER,
        invoice_id=invoice_id(1),
        amount_due=14900,
        currency="usd",
        attempt_count=1,
        last_failure="card_declined",
        details={"opened_by": "evt_1QpL9aLkdIwHu7ixQm3JfZ0r"},
    )
    first = supabase_store.raise_alert(draft, actor="sync", now=NOW)
    # A later failure updates it; an older one delivered late only keeps the higher count.
    retried = dataclasses.replace(
        draft, attempt_count=2, last_failure="insufficient_funds", details={"opened_by": "x"}
    )
    again = supabase_store.raise_alert(retried, actor="sync", now=NOW + timedelta(hours=1))
    older = dataclasses.replace(draft, details={"opened_by": "evt_1QpL9cLkdIwHu7ixW8nTq2Ld"})
    late = supabase_store.raise_alert(older, actor="sync", now=NOW + timedelta(hours=2))
    assert (first.opened, again.opened, late.opened) == (True, False, False)
    assert first.alert.id == again.alert.id == late.alert.id
    assert (late.alert.attempt_count, late.alert.last_failure) == (2, "insufficient_funds")
    assert late.alert.details == {"opened_by": "evt_1QpL9aLkdIwHu7ixQm3JfZ0r"}
    alert_id = first.alert.id

    acked = supabase_store.acknowledge_alert(alert_id, actor="alice", now=NOW)
    assert acked is not None and acked.status == "acknowledged"
    assert supabase_store.acknowledge_alert(alert_id, actor="alice", now=NOW) == acked
    note = supabase_store.add_alert_note(
        alert_id, author="alice", body="called the office", now=NOW
    )
    assert note is not None and supabase_store.alert_notes(alert_id) == [note]
    assert supabase_store.alert_notes_for([alert_id, 999]) == owner.alert_notes_for([alert_id])
    resolved = supabase_store.resolve_alert(
        alert_id, resolution="paid by phone", actor="alice", now=NOW
    )
    assert resolved is not None and resolved.resolution == "paid by phone"
    repeat = supabase_store.resolve_alert(alert_id, resolution="other", actor="bob", now=NOW)
    assert repeat == resolved, "a resolved alert is returned unchanged"
    assert supabase_store.get_alert(alert_id) == owner.get_alert(alert_id) == resolved
    for missing in (
        supabase_store.get_alert(999),
        supabase_store.acknowledge_alert(999, actor="alice", now=NOW),
        supabase_store.resolve_alert(999, resolution="x", actor="alice", now=NOW),
        supabase_store.add_alert_note(999, author="alice", body="x", now=NOW),
    ):
        assert missing is None
    trail = [(r.actor, r.action, r.outcome) for r in owner.audit_trail(f"alert:{alert_id}")]
    assert trail == [
        ("sync", "alert.open", "opened"),
        ("alice", "alert.ack", "acknowledged"),
        ("alice", "alert.note", "noted"),
        ("alice", "alert.resolve", "resolved"),
    ]


def test_settling_an_invoice_resolves_its_alerts_and_cancels_its_steps_together(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    seed_invoices(owner, 2)
    for alert_type in ("invoice_failed", "payment_action_required"):
        supabase_store.raise_alert(
            AlertDraft(alert_type, f"{alert_type}:{invoice_id(0)}", CUSTOMER, invoice_id(0)),
            actor="sync",
            now=NOW,
        )
    resolved, canceled = supabase_store.resolve_invoice_alerts(
        invoice_id(0), resolution="invoice paid", actor="sync", now=NOW
    )
    assert (len(resolved), canceled) == (2, 3)
    assert resolved == sorted(resolved)
    assert supabase_store.resolve_invoice_alerts(
        invoice_id(0), resolution="invoice paid", actor="sync", now=NOW
    ) == ([], 0)
    assert {s.status for s in supabase_store.list_steps(invoice_id=invoice_id(0))} == {"canceled"}
    assert supabase_store.count_steps(statuses=("scheduled",)) == 3, "the other invoice's"
    for alert_id in resolved:
        assert [r.action for r in owner.audit_trail(f"alert:{alert_id}")] == [
            "alert.open",
            "alert.resolve",
        ]


# --- atomic and repeated writes -------------------------------------------------------


def test_a_schedule_with_one_refused_step_writes_none(supabase_store: SupabaseStore) -> None:
    good = StepDraft(invoice_id(1), CUSTOMER, None, 0, "email", "day0_email", NOW)
    fax = dataclasses.replace(good, day=1, channel="fax")
    with pytest.raises(DataRefused) as refused:
        supabase_store.schedule_steps([good, fax], NOW)
    assert refused.value.sqlstate == "23514"
    assert supabase_store.count_steps() == 0
    assert supabase_store.schedule_steps([good, good], NOW) == 1
    assert supabase_store.schedule_steps([good], NOW) == 0


def test_outcomes_of_another_run_or_status_are_not_recorded(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    seed_invoices(owner, 2)
    claimed = supabase_store.claim_due_steps(
        now=NOW, lease_until=NOW + LEASE, run_id="run-a", limit=10
    )
    a, b = (c.step.id for c in claimed)
    with pytest.raises(ValueError, match="not an outcome status: bounced"):
        supabase_store.record_step_outcomes([StepOutcome(a, "bounced")], "run-a", NOW)
    assert (
        supabase_store.record_step_outcomes([StepOutcome(a, "failed", error="x")], "run-b", NOW)
        == 0
    )
    assert supabase_store.release_claims([a, b], "run-b", NOW) == 0
    assert supabase_store.confirm_sends([a, b], "run-b", NOW) == set()
    assert supabase_store.release_claims([b], "run-a", NOW) == 1
    assert [
        s.id for s in supabase_store.list_steps(statuses=("scheduled",), limit=None) if s.day == 0
    ] == [b]
    assert (
        supabase_store.record_step_outcomes(
            [StepOutcome(a, "failed", error="smtp 451"), StepOutcome(b, "failed", error="x")],
            "run-a",
            NOW,
        )
        == 1
    )
    failed = supabase_store.get_step(a)
    assert failed is not None and (failed.status, failed.last_error) == ("failed", "smtp 451")
    assert supabase_store.get_step(a) == owner.get_step(a)


def test_an_undeliverable_skip_opens_one_alert_audited_as_the_actor(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    seed_invoices(owner, 1, first_failed_at=NOW - timedelta(days=1))
    run = "host-c:9:beef"
    claimed = supabase_store.claim_due_steps(now=NOW, lease_until=NOW + LEASE, run_id=run, limit=10)
    assert [c.step.day for c in claimed] == [0, 1]
    reason = "no email or phone for this customer"
    outcomes = [
        StepOutcome(c.step.id, "skipped", reason=reason, undeliverable=True) for c in claimed
    ]
    assert supabase_store.record_step_outcomes(outcomes, run, NOW, actor="cron") == 2
    alerts = supabase_store.list_alerts(AlertQuery(types=("dunning_undeliverable",)))
    assert len(alerts) == 1
    assert (alerts[0].amount_due, alerts[0].currency, alerts[0].last_failure) == (
        14900,
        "usd",
        reason,
    )
    assert [r.actor for r in owner.audit_trail(f"alert:{alerts[0].id}")] == ["cron"]


def test_mark_sent_requeue_and_unmark_move_only_from_their_statuses(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    seed_invoices(owner, 1)
    step = owner.list_steps(limit=1)[0]
    assert supabase_store.requeue_step(step.id, ("failed", "needs_review"), NOW) is None
    marked = supabase_store.mark_step_sent(
        step.id, ("scheduled",), "marked sent by alice: phoned", NOW
    )
    assert marked is not None and (marked.status, marked.sent_at) == ("sent", NOW)
    assert supabase_store.mark_step_sent(step.id, ("scheduled",), "again", NOW) is None
    assert (
        supabase_store.unmark_step_sent(
            step.id, marked_reason="someone else", status="scheduled", reason=None, now=NOW
        )
        is None
    )
    restored = supabase_store.unmark_step_sent(
        step.id,
        marked_reason="marked sent by alice: phoned",
        status="scheduled",
        reason=None,
        now=NOW,
    )
    assert restored is not None and (restored.status, restored.sent_at) == ("scheduled", None)
    assert restored == owner.get_step(step.id)
    assert supabase_store.get_step(10_000) is None


def test_an_exhaustion_alert_opens_once_per_invoice_ever(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    candidate = EscalationCandidate(invoice_id(7), CUSTOMER, 3, 14900, "usd")
    alert_id = supabase_store.open_exhaustion_alert(candidate, {"completed": 3}, NOW)
    assert alert_id is not None
    assert supabase_store.open_exhaustion_alert(candidate, {"completed": 3}, NOW) is None
    supabase_store.update_alert_details(alert_id, {"completed": 3, "notified": {}}, NOW)
    supabase_store.resolve_alert(alert_id, resolution="written off", actor="alice", now=NOW)
    assert supabase_store.open_exhaustion_alert(candidate, {}, NOW) is None, "even resolved"
    alert = supabase_store.get_alert(alert_id)
    assert alert is not None and alert.details == {"completed": 3, "notified": {}}
    assert (alert.amount_due, alert.dedupe_key) == (14900, f"dunning_exhausted:{invoice_id(7)}")


def test_exemptions_reach_the_claim_the_confirmation_and_escalation(
    owner: PostgresStore, supabase_store: SupabaseStore
) -> None:
    # Exempting is the "exemptions, recovery" area's: done here by the owner's store.
    seed_invoices(owner, 2, first_failed_at=NOW - timedelta(days=3))
    exempt = owner.exempt_customer(CUSTOMER, reason="payment plan", actor="alice", now=NOW)
    assert supabase_store.due_steps(NOW, None) == owner.due_steps(NOW, None)
    claimed = supabase_store.claim_due_steps(
        now=NOW, lease_until=NOW + LEASE, run_id="run-a", limit=10
    )
    assert len(claimed) == 6 and {c.exemption for c in claimed} == {exempt.exemption}
    ids = [c.step.id for c in claimed]
    assert supabase_store.confirm_sends(ids, "run-a", NOW) == set()
    owner.unexempt_customer(CUSTOMER, actor="bob", now=NOW)
    assert supabase_store.confirm_sends(ids[:1], "run-a", NOW) == {ids[0]}
    sent = [StepOutcome(i, "sent", provider_message_id=f"<{i}@cloudgreet.test>") for i in ids]
    assert supabase_store.record_step_outcomes(sent, "run-a", NOW) == 6
    assert [c.invoice_id for c in supabase_store.escalation_candidates(3)] == [
        invoice_id(0),
        invoice_id(1),
    ]
    # Exempted again: whoever exempted the customer owns the follow-up.
    owner.exempt_customer(CUSTOMER, reason="VIP", actor="carol", now=NOW)
    assert supabase_store.escalation_candidates(3) == owner.escalation_candidates(3) == []


# --- the claim function on PostgreSQL, by concurrent sessions ---------------------------

CLAIM = "SELECT billing_api_claim_due_steps(%s, %s, %s, %s)"


def claimed_ids(answer: Any) -> list[int]:
    return [int(row["id"]) for row in answer]


def test_the_claim_function_never_hands_one_step_to_two_sessions(postgres_url: str) -> None:
    owner = PostgresStore(postgres_url)
    owner.migrate()
    seed_invoices(owner, 60)
    with psycopg.connect(postgres_url) as first, psycopg.connect(postgres_url) as second:
        # The first claim's transaction stays open, holding its rows: the second session
        # skips them instead of waiting, and takes the next ones.
        held = claimed_ids(first.execute(CLAIM, (NOW, NOW + LEASE, "run-a", 40)).fetchone()[0])
        second.execute("SET lock_timeout = '2s'")
        took = claimed_ids(second.execute(CLAIM, (NOW, NOW + LEASE, "run-b", 40)).fetchone()[0])
        second.commit()
        first.rollback()
        assert (len(held), len(took)) == (40, 20)
        assert not set(held) & set(took)
        again = claimed_ids(first.execute(CLAIM, (NOW, NOW + LEASE, "run-c", 100)).fetchone()[0])
        first.commit()
        assert sorted(again) == sorted(held), "a rolled-back claim gives its steps back"

    # Four sessions racing in small claims: every due step once, to exactly one claimant.
    owner.expire_leases(NOW + 2 * LEASE)
    for step in owner.list_steps(statuses=("needs_review",), limit=None):
        owner.requeue_step(step.id, ("needs_review",), NOW)
    winners: dict[int, list[str]] = {}
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claim_until_empty(run_id: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            start.wait()
            while ids := claimed_ids(
                conn.execute(CLAIM, (NOW, NOW + LEASE, run_id, 3)).fetchone()[0]
            ):
                with lock:
                    for step_id in ids:
                        winners.setdefault(step_id, []).append(run_id)

    threads = [threading.Thread(target=claim_until_empty, args=(f"run-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    due = {s.id for s in owner.list_steps(statuses=None, limit=None) if s.day == 0}
    assert set(winners) == due
    assert {len(runs) for runs in winners.values()} == {1}
    holders = {s.id: s.claimed_by for s in owner.list_steps(statuses=("sending",), limit=None)}
    assert holders == {step_id: runs[0] for step_id, runs in winners.items()}
    owner.close()


# --- the functions' declarations --------------------------------------------------------

#: The section's functions that only read: STABLE, so PostgREST runs them READ ONLY.
READS = {
    "billing_api_get_alert",
    "billing_api_list_alerts",
    "billing_api_count_alerts",
    "billing_api_alerts_touched",
    "billing_api_alert_notes",
    "billing_api_ledger_totals",
    "billing_api_ledger_created_window",
    "billing_api_dunning_facts",
    "billing_api_dunning_claimed_json",
    "billing_api_invoice_facts",
    "billing_api_dunning_reach",
    "billing_api_count_needs_review",
    "billing_api_count_due_steps",
    "billing_api_due_steps",
    "billing_api_list_steps",
    "billing_api_count_steps",
    "billing_api_get_step",
    "billing_api_escalation_candidates",
}


def section_functions() -> set[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "migrations" / "0007_supabase_api.sql").read_text()
    start = text.index("-- ==== section: alerts, dunning")
    section = text[start : text.index("-- ==== end section: alerts, dunning", start)]
    return set(re.findall(r"CREATE OR REPLACE FUNCTION (billing_api_\w+)", section))


def test_the_functions_run_as_the_caller_for_service_role_only(
    supabase_store: SupabaseStore, postgrest: Any
) -> None:
    names = section_functions()
    assert names > READS and len(names) > len(READS) + 15
    rows = postgrest.sql(
        "SELECT p.proname, p.prosecdef, p.provolatile, p.proconfig, "
        "has_function_privilege('anon', p.oid, 'EXECUTE'), "
        "has_function_privilege('authenticated', p.oid, 'EXECUTE'), "
        "has_function_privilege('service_role', p.oid, 'EXECUTE') "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND p.proname = ANY(%s)",
        (sorted(names),),
    )
    assert {row[0] for row in rows} == names, "one function per name, no overloads"
    for name, definer, volatility, config, anon, authenticated, service in rows:
        assert not definer, f"{name} must be SECURITY INVOKER"
        assert config == ["search_path=public, pg_temp"], name
        assert volatility == ("s" if name in READS else "v"), name
        assert (anon, authenticated, service) == (False, False, True), name
    # A publishable key (the anon role) is refused before any step is claimed.
    anon = SupabaseStore(postgrest.url, postgrest.keys.publishable)
    with pytest.raises(ConfigError):
        anon.claim_due_steps(now=NOW, lease_until=NOW + LEASE, run_id="anon", limit=1)
    anon._api.close()
