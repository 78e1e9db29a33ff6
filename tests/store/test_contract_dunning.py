"""The store contract for alerts and dunning runs: the transitions of an alert, and a run's
claim, confirm, record, release and lease expiry (SQLite, PostgreSQL, Supabase REST).

Only alerts and dunning operations are used, so that every backend answers each test with
its own implementation of this area alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.adapters.store.sql_dunning import REVIEW_CONFIRMED, REVIEW_UNCONFIRMED
from cloudgreet_billing.domain.alerts import AlertDraft
from cloudgreet_billing.domain.dunning import EscalationCandidate, StepOutcome, TimelinePlanner

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)
CUSTOMER = "cus_RkS5AtmBK5hCeq"
INVOICES = ("in_1QpL8HLkdIwHu7ixl4OzzPMv", "in_1QpL9aLkdIwHu7ixQm3JfZ0r")


def schedule(store: Any, first_failed_at: datetime) -> None:
    planner = TimelinePlanner()
    for invoice in INVOICES:
        store.schedule_steps(
            planner(
                invoice_id=invoice,
                customer_id=CUSTOMER,
                alert_id=None,
                first_failed_at=first_failed_at,
            ),
            NOW,
        )


def test_an_alert_moves_open_acknowledged_resolved_and_keeps_its_notes(store: Any) -> None:
    draft = AlertDraft(
        type="invoice_failed",
        dedupe_key=f"invoice_failed:{INVOICES[0]}",
        customer_id=CUSTOMER,
        invoice_id=INVOICES[0],
        amount_due=14900,
        currency="usd",
        attempt_count=1,
        last_failure="card_declined",
        details={"opened_by": "evt_1QpLAbLkdIwHu7ixc5Vd2mHq"},
    )
    opened = store.raise_alert(draft, actor="sync", now=NOW)
    assert opened.opened and opened.alert.status == "open"
    newer = replace(
        draft, attempt_count=2, last_failure="expired_card", details={"opened_by": "evt_2"}
    )
    updated = store.raise_alert(newer, actor="sync", now=NOW + timedelta(hours=1))
    assert not updated.opened and updated.alert.id == opened.alert.id
    assert (updated.alert.attempt_count, updated.alert.last_failure) == (2, "expired_card")

    alert_id = opened.alert.id
    acked = store.acknowledge_alert(alert_id, actor="alice", now=NOW + timedelta(hours=2))
    assert acked.status == "acknowledged" and acked.acknowledged_at == NOW + timedelta(hours=2)
    store.add_alert_note(alert_id, author="alice", body="left a voicemail", now=NOW)
    store.add_alert_note(alert_id, author="bob", body="card updated", now=NOW + timedelta(1))
    assert [n.author for n in store.alert_notes(alert_id)] == ["alice", "bob"]
    resolved = store.resolve_alert(alert_id, resolution="paid", actor="bob", now=NOW)
    assert (resolved.status, resolved.resolution) == ("resolved", "paid")
    assert store.acknowledge_alert(alert_id, actor="alice", now=NOW) == resolved
    assert store.list_alerts(AlertQuery()) == []
    assert store.count_alerts(AlertQuery(statuses=("resolved",))) == 1
    # A failure after the resolution opens a new alert under the same key.
    reopened = store.raise_alert(
        AlertDraft(draft.type, draft.dedupe_key, details={"opened_by": "evt_3"}),
        actor="sync",
        now=NOW + timedelta(days=2),
    )
    assert reopened.opened and reopened.alert.id != alert_id
    touched = store.alerts_touched(NOW + timedelta(days=2), NOW + timedelta(days=3))
    assert [a.id for a in touched] == [reopened.alert.id]
    assert store.get_alert(10_000) is None
    assert store.add_alert_note(10_000, author="alice", body="x", now=NOW) is None


def test_a_run_claims_confirms_records_and_releases_only_what_it_holds(store: Any) -> None:
    schedule(store, NOW - timedelta(days=1))  # days 0 and 1 due, day 3 not yet
    assert store.count_due_steps(NOW) == 4
    first = store.claim_due_steps(now=NOW, lease_until=NOW + LEASE, run_id="run-a", limit=3)
    second = store.claim_due_steps(now=NOW, lease_until=NOW + LEASE, run_id="run-b", limit=3)
    assert len(first) == 3 and len(second) == 1
    assert not {c.step.id for c in first} & {c.step.id for c in second}
    assert [c.superseded for c in first + second] == [True, True, False, False]
    assert {c.channels for c in first} == {frozenset({"email", "sms"})}
    assert store.claim_due_steps(now=NOW, lease_until=NOW + LEASE, run_id="run-c", limit=9) == []

    mine = [c.step.id for c in first]
    assert store.confirm_sends(mine, "run-b", NOW) == set()
    assert store.confirm_sends(mine[:1], "run-a", NOW, NOW + 2 * LEASE) == {mine[0]}
    confirmed = store.get_step(mine[0])
    assert (confirmed.attempts, confirmed.confirmed_at) == (1, NOW)
    assert confirmed.lease_expires_at == NOW + 2 * LEASE
    recorded = store.record_step_outcomes(
        [
            StepOutcome(mine[0], "sent", provider_message_id="<m1@cloudgreet.test>"),
            StepOutcome(mine[1], "skipped", reason="superseded"),
            StepOutcome(second[0].step.id, "failed", error="not mine"),
        ],
        "run-a",
        NOW,
    )
    assert recorded == 2
    assert store.release_claims([mine[2], second[0].step.id], "run-a", NOW) == 1
    statuses = {s.id: s.status for s in store.list_steps(statuses=None, limit=None)}
    assert [statuses[i] for i in mine] == ["sent", "skipped", "scheduled"]
    assert statuses[second[0].step.id] == "sending"
    assert store.count_steps(statuses=("sending",)) == 1
    with pytest.raises(ValueError, match="not an outcome status"):
        store.record_step_outcomes([StepOutcome(mine[2], "delivered")], "run-a", NOW)


def test_leases_run_out_into_needs_review_saying_whether_the_step_was_confirmed(
    store: Any,
) -> None:
    schedule(store, NOW)
    claimed = store.claim_due_steps(now=NOW, lease_until=NOW + LEASE, run_id="run-a", limit=5)
    ids = [c.step.id for c in claimed]
    assert len(ids) == 2
    store.confirm_sends(ids[:1], "run-a", NOW)
    assert store.expire_leases(NOW + LEASE) == 0
    assert store.expire_leases(NOW + LEASE + timedelta(microseconds=1)) == 2
    assert store.count_needs_review() == 2
    reasons = [store.get_step(i).reason for i in ids]
    assert reasons == [REVIEW_CONFIRMED, REVIEW_UNCONFIRMED]
    # It went out after all: the late outcome is recorded.
    late = StepOutcome(ids[0], "sent", provider_message_id="<late@cloudgreet.test>")
    assert store.record_step_outcomes([late], "run-a", NOW + LEASE) == 1
    requeued = store.requeue_step(ids[1], ("needs_review",), NOW + LEASE)
    assert (requeued.status, requeued.claimed_by, requeued.confirmed_at) == (
        "scheduled",
        None,
        None,
    )
    assert store.count_needs_review() == 0


def test_operators_mark_sent_and_undo_and_settling_cancels_what_is_pending(store: Any) -> None:
    schedule(store, NOW)
    step = store.list_steps(invoice_id=INVOICES[0], limit=1)[0]
    marked = store.mark_step_sent(step.id, ("scheduled", "failed"), "marked sent by alice", NOW)
    assert (marked.status, marked.reason, marked.sent_at) == ("sent", "marked sent by alice", NOW)
    assert store.mark_step_sent(step.id, ("scheduled",), "again", NOW) is None
    assert store.requeue_step(step.id, ("failed",), NOW) is None
    undone = store.unmark_step_sent(
        step.id, marked_reason="marked sent by alice", status="scheduled", reason=None, now=NOW
    )
    assert (undone.status, undone.sent_at, undone.reason) == ("scheduled", None, None)
    store.raise_alert(
        AlertDraft("invoice_failed", f"invoice_failed:{INVOICES[0]}", CUSTOMER, INVOICES[0]),
        actor="sync",
        now=NOW,
    )
    resolved, canceled = store.resolve_invoice_alerts(
        INVOICES[0], resolution="invoice paid", actor="sync", now=NOW
    )
    assert (len(resolved), canceled) == (1, 3)
    assert store.cancel_pending_steps(INVOICES[1], "invoice voided", NOW) == 3
    assert {s.reason for s in store.list_steps(statuses=("canceled",), limit=None)} == {
        "invoice paid",
        "invoice voided",
    }


def test_an_invoice_exhausts_its_timeline_once(store: Any) -> None:
    schedule(store, NOW - timedelta(days=3))
    claimed = store.claim_due_steps(now=NOW, lease_until=NOW + LEASE, run_id="run-a", limit=10)
    outcomes = [
        StepOutcome(c.step.id, "sent", provider_message_id=f"<{c.step.id}@cloudgreet.test>")
        for c in claimed
        if c.step.invoice_id == INVOICES[0]
    ] + [
        StepOutcome(c.step.id, "failed", error="smtp 451")
        for c in claimed
        if c.step.invoice_id == INVOICES[1]
    ]
    assert store.record_step_outcomes(outcomes, "run-a", NOW) == 6
    candidates = store.escalation_candidates(3)
    assert candidates == [
        EscalationCandidate(INVOICES[0], CUSTOMER, 3, None, None, None),
    ]
    alert_id = store.open_exhaustion_alert(candidates[0], {"completed": 3}, NOW)
    assert alert_id is not None
    assert store.open_exhaustion_alert(candidates[0], {"completed": 3}, NOW) is None
    store.update_alert_details(alert_id, {"completed": 3, "notified": {"slack": "sent"}}, NOW)
    assert store.get_alert(alert_id).details == {"completed": 3, "notified": {"slack": "sent"}}
    assert store.escalation_candidates(3) == []
