"""The store contract for dunning exemptions, on SQLite, PostgreSQL and Supabase REST: each
change is audited in its own transaction, a second exempt keeps the first, and a run's
claim and confirmation see the exemptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudgreet_billing.domain.exemptions import Exemption
from tests.dunning.conftest import T0, schedule, seed_invoice

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
PLAN = "cus_QpL8HLkdIwHu7i"
VIP = "cus_Rq2mXk9fLw3ZtA"
OTHER = "cus_Sx7bNn4gYh1CvE"
INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
VIP_INVOICE = "in_1Rq2mXk9fLw3ZtAb7VbHjKqe"


def trail(store: Any, customer_id: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [(a.action, a.outcome, a.actor, dict(a.details)) for a in store.audit_trail(customer_id)]


def test_exempt_round_trips_and_is_audited_with_it(store: Any) -> None:
    outcome = store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=NOW)
    assert outcome.created
    assert outcome.exemption == Exemption(PLAN, "payment plan", "alice", NOW)
    found = store.get_exemption(PLAN)
    assert found == outcome.exemption
    assert found.created_at.tzinfo is not None
    assert store.get_exemption(VIP) is None
    assert trail(store, PLAN) == [
        ("dunning.exempt", "exempted", "alice", {"reason": "payment plan"})
    ]
    assert store.row_counts()["billing_dunning_exemptions"] == 1


def test_a_second_exempt_keeps_the_first_reason_actor_and_time(store: Any) -> None:
    store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=NOW)
    later = NOW + timedelta(days=2)
    again = store.exempt_customer(PLAN, reason="VIP", actor="bob", now=later)
    assert not again.created
    assert again.exemption == Exemption(PLAN, "payment plan", "alice", NOW)
    assert store.get_exemption(PLAN) == again.exemption
    assert trail(store, PLAN)[-1] == (
        "dunning.exempt",
        "already_exempt",
        "bob",
        {
            "reason": "VIP",
            "exempt_reason": "payment plan",
            "exempted_by": "alice",
            "exempted_at": "2026-11-24T09:00:00Z",
        },
    )


def test_unexempt_ends_the_exemption_and_says_when_there_was_none(store: Any) -> None:
    store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=NOW)
    ended = store.unexempt_customer(PLAN, actor="bob", now=NOW + timedelta(days=30))
    assert ended == Exemption(PLAN, "payment plan", "alice", NOW)
    assert store.get_exemption(PLAN) is None
    assert store.unexempt_customer(PLAN, actor="bob", now=NOW + timedelta(days=31)) is None
    assert trail(store, PLAN)[1:] == [
        (
            "dunning.unexempt",
            "unexempted",
            "bob",
            {
                "exempt_reason": "payment plan",
                "exempted_by": "alice",
                "exempted_at": "2026-11-24T09:00:00Z",
            },
        ),
        ("dunning.unexempt", "not_exempt", "bob", {}),
    ]
    # Exempt again after an unexempt: a new exemption, with the new reason.
    fresh = store.exempt_customer(PLAN, reason="VIP", actor="carol", now=NOW + timedelta(days=40))
    assert fresh.created and fresh.exemption.reason == "VIP"


#: The audit log refusing every line, in the database: the REST store's exempt is one
#: function call, which no Python seam interrupts.
REFUSE_AUDIT = """
CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log refused the line'; END $$;
CREATE TRIGGER refuse_audit BEFORE INSERT ON billing_audit_log
FOR EACH ROW EXECUTE FUNCTION refuse_audit();
"""


def test_an_exemption_and_its_audit_line_are_written_together_or_not_at_all(
    store: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    store.exempt_customer(VIP, reason="VIP", actor="alice", now=NOW)
    refused: type[Exception] = RuntimeError
    if store.backend == "supabase":
        from cloudgreet_billing.errors import StoreError

        postgrest = request.getfixturevalue("postgrest")
        postgrest.sql(REFUSE_AUDIT)
        refused = StoreError
    else:

        def audit_fails(*args: Any, **kwargs: Any) -> int:
            raise RuntimeError("the audit log refused the line")

        monkeypatch.setattr(store, "_insert_audit", audit_fails)
    with pytest.raises(refused, match="the audit log refused the line"):
        store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=NOW)
    with pytest.raises(refused, match="the audit log refused the line"):
        store.unexempt_customer(VIP, actor="bob", now=NOW)
    monkeypatch.undo()
    if store.backend == "supabase":
        postgrest.sql("DROP TRIGGER refuse_audit ON billing_audit_log")
    assert store.get_exemption(PLAN) is None
    assert store.get_exemption(VIP) == Exemption(VIP, "VIP", "alice", NOW)
    assert [a.outcome for a in store.audit_trail(PLAN)] == []
    assert [a.outcome for a in store.audit_trail(VIP)] == ["exempted"]


def test_list_exemptions_oldest_first_by_customer_and_with_a_limit(store: Any) -> None:
    store.exempt_customer(VIP, reason="VIP", actor="alice", now=NOW + timedelta(hours=1))
    store.exempt_customer(PLAN, reason="payment plan", actor="bob", now=NOW)
    assert [e.customer_id for e in store.list_exemptions()] == [PLAN, VIP]
    assert [e.customer_id for e in store.list_exemptions(limit=1)] == [PLAN]
    assert [e.customer_id for e in store.list_exemptions(customer_ids=[VIP, OTHER])] == [VIP]
    assert store.list_exemptions(customer_ids=[]) == []
    assert store.count_exemptions() == 2


def test_a_claim_carries_the_customers_exemption(store: Any) -> None:
    seed_invoice(store, INVOICE, PLAN)
    schedule(store, INVOICE, PLAN)
    seed_invoice(store, VIP_INVOICE, VIP)
    schedule(store, VIP_INVOICE, VIP)
    store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=T0)
    expected = {PLAN: Exemption(PLAN, "payment plan", "alice", T0), VIP: None}
    now = T0 + timedelta(hours=1)
    # What a dry run sees, and what a run claims: the same exemptions.
    planned = store.due_steps(now, None)
    assert {item.step.customer_id: item.exemption for item in planned} == expected
    claimed = store.claim_due_steps(
        now=now, lease_until=now + timedelta(hours=1), run_id="r1", limit=10
    )
    assert {item.step.customer_id: item.exemption for item in claimed} == expected


def test_an_exemption_committed_after_the_claim_fails_the_confirmation(store: Any) -> None:
    seed_invoice(store, INVOICE, PLAN)
    schedule(store, INVOICE, PLAN)
    seed_invoice(store, VIP_INVOICE, VIP)
    schedule(store, VIP_INVOICE, VIP)
    now = T0 + timedelta(hours=1)
    claimed = store.claim_due_steps(
        now=now, lease_until=now + timedelta(hours=1), run_id="r1", limit=10
    )
    ids = {item.step.customer_id: item.step.id for item in claimed}
    store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=now)
    assert store.confirm_sends([ids[PLAN], ids[VIP]], "r1", now) == {ids[VIP]}
    assert store.get_step(ids[PLAN]).attempts == 0
    assert store.get_step(ids[PLAN]).status == "sending"  # still held: the run records it


def test_an_exempt_customers_invoice_is_not_escalated_until_unexempt(store: Any) -> None:
    seed_invoice(store, INVOICE, PLAN)
    schedule(store, INVOICE, PLAN)
    store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=T0)
    for step in store.list_steps(invoice_id=INVOICE, limit=None):
        store.mark_step_sent(step.id, ("scheduled",), "marked sent by hand", T0)
    assert store.escalation_candidates(3) == []
    store.unexempt_customer(PLAN, actor="bob", now=T0)
    assert [c.invoice_id for c in store.escalation_candidates(3)] == [INVOICE]
