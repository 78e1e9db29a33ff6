"""The claim → confirm → send → record protocol, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cloudgreet_billing.adapters.notify.email_smtp import SmtpEmailSender
from cloudgreet_billing.adapters.notify.sms_console import ConsoleSmsSender
from cloudgreet_billing.domain.dunning import DunningConfig, StepOutcome
from cloudgreet_billing.services.dunning.messages import MessageBook
from cloudgreet_billing.services.dunning.run import Channels, run_dunning
from tests.dunning.conftest import T0, SmtpSink, schedule, seed_invoice, settle

LATER = T0 + timedelta(minutes=5)
LEASE = LATER + timedelta(minutes=10)


def claim(store: Any, run_id: str, limit: int = 10, now: Any = LATER) -> list[Any]:
    return store.claim_due_steps(
        now=now, lease_until=now + timedelta(minutes=10), run_id=run_id, limit=limit
    )


def test_scheduling_twice_is_a_no_op(store: Any) -> None:
    assert schedule(store) == 3
    assert schedule(store) == 0
    assert len(store.list_steps(invoice_id="in_1", limit=None)) == 3


def test_claims_never_overlap(store: Any) -> None:
    for n in range(6):
        seed_invoice(store, f"in_{n}", f"cus_{n}")
        schedule(store, f"in_{n}", f"cus_{n}")
    first = claim(store, "run-a", limit=4)
    second = claim(store, "run-b", limit=4)
    assert len(first) == 4 and len(second) == 2
    assert not {c.step.id for c in first} & {c.step.id for c in second}
    assert claim(store, "run-c") == []
    held = store.list_steps(statuses=("sending",), limit=None)
    assert {s.claimed_by for s in held} == {"run-a", "run-b"}


def test_a_claimed_step_knows_its_invoice_and_whether_it_is_superseded(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [day0, day1] = claim(store, "run-a", now=T0 + timedelta(days=1, hours=1))
    assert (day0.step.day, day0.superseded, day1.step.day, day1.superseded) == (0, True, 1, False)
    assert day1.invoice.phone == "+15550100"
    assert day1.invoice.hosted_invoice_url == "https://invoice.stripe.com/i/test_1"
    assert (day1.invoice.amount_remaining, day1.invoice.currency) == (12345, "usd")


def test_payment_between_claim_and_confirm_stops_the_send(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [claimed] = claim(store, "run-a")
    settle(store)  # the webhook lands while the run is rendering
    assert store.confirm_sends([claimed.step.id], "run-a", LATER) == set()
    assert store.get_step(claimed.step.id).status == "canceled"


def test_a_settled_mirror_alone_stops_the_confirmation(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [claimed] = claim(store, "run-a")
    # The mirror learns of the payment, but nothing has called the cancel seam (yet).
    seed_invoice(store, status="paid", now=LATER)
    assert store.confirm_sends([claimed.step.id], "run-a", LATER) == set()
    assert store.get_step(claimed.step.id).status == "sending"


def test_only_the_holder_can_confirm_or_record(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [claimed] = claim(store, "run-a")
    step_id = claimed.step.id
    assert store.confirm_sends([step_id], "run-b", LATER) == set()
    assert (
        store.record_step_outcomes([StepOutcome(step_id, "failed", error="x")], "run-b", LATER) == 0
    )
    assert store.confirm_sends([step_id], "run-a", LATER) == {step_id}
    recorded = store.record_step_outcomes(
        [StepOutcome(step_id, "sent", provider_message_id="msg-1")], "run-a", LATER
    )
    assert recorded == 1
    step = store.get_step(step_id)
    assert (step.status, step.attempts, step.provider_message_id) == ("sent", 1, "msg-1")


def test_an_expired_lease_becomes_needs_review_and_is_not_resent(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [claimed] = claim(store, "crashed-run")
    assert store.expire_leases(LEASE - timedelta(seconds=1)) == 0
    assert store.expire_leases(LEASE + timedelta(seconds=1)) == 1
    step = store.get_step(claimed.step.id)
    assert step.status == "needs_review"
    # Never confirmed: the message never left, and requeue is the safe answer.
    assert (step.may_have_been_sent, step.reason) == (
        False,
        "the run stopped before handing this message to any provider: requeue sends it",
    )
    assert claim(store, "next-run", now=LEASE + timedelta(minutes=1)) == []
    assert [s.id for s in store.list_steps(limit=None)][:1] == [step.id]  # default list shows it


def test_a_confirmed_step_whose_run_died_may_have_been_sent(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [claimed] = claim(store, "crashed-run")
    assert store.confirm_sends([claimed.step.id], "crashed-run", LATER)
    assert store.expire_leases(LATER + timedelta(minutes=11)) == 1
    step = store.get_step(claimed.step.id)
    assert (step.status, step.may_have_been_sent) == ("needs_review", True)
    assert step.reason == (
        "the run stopped after confirming this message, so the provider may have it: check "
        "the provider's log, then mark-sent or requeue"
    )
    # Requeued, it starts afresh: a new claim has confirmed nothing yet.
    store.requeue_step(step.id, ("needs_review",), LATER + timedelta(minutes=12))
    [again] = claim(store, "next-run", now=LATER + timedelta(minutes=13))
    assert (again.step.confirmed_at, store.get_step(step.id).may_have_been_sent) == (None, False)


def test_a_late_sent_record_wins_over_expiry_and_cancellation(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [claimed] = claim(store, "slow-run")
    assert store.confirm_sends([claimed.step.id], "slow-run", LATER)
    store.expire_leases(LEASE + timedelta(seconds=1))
    settle(store)
    # The message did leave: the record says so rather than pretending it did not.
    assert (
        store.record_step_outcomes(
            [StepOutcome(claimed.step.id, "sent", provider_message_id="m")], "slow-run", LATER
        )
        == 1
    )
    assert store.get_step(claimed.step.id).status == "sent"


def test_released_claims_go_back_to_scheduled(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    [claimed] = claim(store, "run-a")
    assert store.release_claims([claimed.step.id], "run-a", LATER) == 1
    assert store.get_step(claimed.step.id).status == "scheduled"


class SettlesAfterClaim:
    """The store, with a payment arriving right after each claim (before any send)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def claim_due_steps(self, **kwargs: Any) -> list[Any]:
        claimed = self._store.claim_due_steps(**kwargs)
        for item in claimed:
            settle(self._store, item.step.invoice_id, item.step.customer_id)
        return claimed


def test_payment_arriving_between_claim_and_send_prevents_the_send(
    store: Any, smtp_server: SmtpSink
) -> None:
    seed_invoice(store)
    schedule(store)
    channels = Channels(
        email=SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test"),
        sms=ConsoleSmsSender(),
    )
    summary = run_dunning(
        SettlesAfterClaim(store),  # type: ignore[arg-type]
        channels,
        DunningConfig(),
        MessageBook(),
        actor="tester@ci",
        clock=lambda: LATER,
    )
    channels.email.close()
    assert (summary.due, summary.sent, summary.canceled) == (1, 0, 1)
    assert smtp_server.received == []
    assert store.list_steps(invoice_id="in_1", limit=None)[0].status == "canceled"


def test_without_the_payment_the_same_run_sends_over_smtp(
    store: Any, smtp_server: SmtpSink
) -> None:
    seed_invoice(store)
    schedule(store)
    channels = Channels(
        email=SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test"),
        sms=ConsoleSmsSender(),
    )
    summary = run_dunning(
        store, channels, DunningConfig(), MessageBook(), actor="tester@ci", clock=lambda: LATER
    )
    channels.email.close()
    assert (summary.due, summary.sent) == (1, 1)
    [received] = smtp_server.received
    step = store.list_steps(invoice_id="in_1", limit=None)[0]
    assert received.step_id == step.id
    assert received.rcpt == "ada@example.com"
    assert received.message["Message-ID"].strip("<>") == step.provider_message_id


class BreaksOnSecond:
    """An email backend that crashes (not a delivery error: a bug) on its second message."""

    name = "broken"

    def __init__(self) -> None:
        self.sent: list[int | None] = []

    def send(self, email: Any) -> str:
        if len(self.sent) == 1:
            raise RuntimeError("backend bug")
        self.sent.append(email.step_id)
        return "ok"

    def close(self) -> None:
        return None


def test_an_unexpected_error_gives_back_the_steps_never_handed_over(store: Any) -> None:
    for n in range(4):
        seed_invoice(store, f"in_{n}", f"cus_{n}")
        schedule(store, f"in_{n}", f"cus_{n}")
    email = BreaksOnSecond()
    with pytest.raises(RuntimeError, match="backend bug"):
        run_dunning(
            store,
            Channels(email=email, sms=ConsoleSmsSender()),
            DunningConfig(),
            MessageBook(),
            actor="tester@ci",
            clock=lambda: LATER,
        )
    day0 = [s for s in store.list_steps(limit=None, statuses=None) if s.day == 0]
    assert [s.status for s in day0] == ["sent", "sending", "scheduled", "scheduled"]
    assert day0[0].id == email.sent[0]


def test_confirming_a_send_renews_the_lease(store: Any) -> None:
    """A slow batch keeps what it confirmed: another run cannot expire it mid-send."""
    from cloudgreet_billing.domain.dunning import TimelinePlanner

    steps = TimelinePlanner()(
        invoice_id="in_lease", customer_id="cus_1", alert_id=None, first_failed_at=T0
    )
    store.schedule_steps(steps[:1], T0)
    [claimed] = store.claim_due_steps(
        now=T0, lease_until=T0 + timedelta(minutes=10), run_id="slow", limit=10
    )
    late = T0 + timedelta(minutes=9)
    assert store.confirm_sends([claimed.step.id], "slow", late, late + timedelta(minutes=10))
    assert store.expire_leases(T0 + timedelta(minutes=15)) == 0
    assert store.expire_leases(T0 + timedelta(minutes=20)) == 1
