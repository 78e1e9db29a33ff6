"""A payment stops dunning however slow the provider: each message is confirmed, by itself,
immediately before it is handed over.

On SQLite and PostgreSQL. Providers here take their time on freezegun's clock, not the wall's;
payments arrive over a connection of their own, as a webhook's would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from cloudgreet_billing.adapters.notify.protocol import OutgoingEmail
from cloudgreet_billing.adapters.notify.sms_console import ConsoleSmsSender
from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.dunning import DunningConfig
from cloudgreet_billing.services.dunning.messages import MessageBook
from cloudgreet_billing.services.dunning.run import Channels, RunSummary, run_dunning
from tests.dunning.conftest import T0, schedule, seed_invoice, settle

LATER = T0 + timedelta(minutes=5)


class ConfirmationSpy:
    """The store, noting each confirmation: when, and for which steps."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.looks: list[tuple[datetime, list[int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def confirm_sends(
        self,
        step_ids: Sequence[int],
        run_id: str,
        now: datetime,
        lease_until: datetime | None = None,
    ) -> set[int]:
        self.looks.append((now, list(step_ids)))
        return set(self._store.confirm_sends(step_ids, run_id, now, lease_until))


class TimedEmail:
    """An email provider taking ``took`` per message on the frozen clock; ``during[n]`` runs
    while the n-th message is on its way."""

    name = "timed"

    def __init__(
        self,
        frozen: FrozenDateTimeFactory,
        took: timedelta,
        during: dict[int, Callable[[], None]] | None = None,
    ) -> None:
        self.frozen = frozen
        self.took = took
        self.during = during or {}
        self.sent: list[tuple[int | None, datetime]] = []

    def send(self, email: OutgoingEmail) -> str:
        self.sent.append((email.step_id, utcnow()))
        action = self.during.get(len(self.sent))
        if action is not None:
            action()
        self.frozen.tick(self.took)
        return f"msg-{email.step_id}"

    def close(self) -> None:
        return None


def seed_unpaid(store: Any, invoices: int) -> dict[str, int]:
    """``invoices`` unpaid invoices whose day-0 email is due at LATER; their step ids."""
    for n in range(invoices):
        seed_invoice(store, f"in_{n}", f"cus_{n}")
        schedule(store, f"in_{n}", f"cus_{n}")
    return {s.invoice_id: s.id for s in store.list_steps(limit=None) if s.day == 0}


def run(store: Any, email: TimedEmail) -> RunSummary:
    return run_dunning(
        store,
        Channels(email=email, sms=ConsoleSmsSender()),
        DunningConfig(),
        MessageBook(),
        actor="tester@ci",
    )


def test_a_payment_committed_180_ms_before_a_send_stops_it(store: Any) -> None:
    day0 = seed_unpaid(store, 3)
    webhook = open_store(load_settings())  # the payment arrives over its own connection
    try:
        with freeze_time(LATER) as frozen:
            # in_1 is paid as in_0's message starts on its way; that one takes 180 ms, so
            # the payment is 180 ms old when in_1's turn comes.
            email = TimedEmail(
                frozen,
                timedelta(milliseconds=180),
                during={1: lambda: settle(webhook, "in_1", "cus_1")},
            )
            summary = run(store, email)
    finally:
        webhook.close()

    assert (summary.due, summary.sent, summary.canceled, summary.failed) == (3, 2, 1, 0)
    assert [step_id for step_id, _ in email.sent] == [day0["in_0"], day0["in_2"]]
    paid = store.get_step(day0["in_1"])
    assert (paid.status, paid.sent_at, paid.attempts) == ("canceled", None, 0)
    assert paid.reason == "invoice paid"


def test_every_message_is_confirmed_by_itself_as_it_is_handed_over(store: Any) -> None:
    day0 = seed_unpaid(store, 12)
    webhook = open_store(load_settings())
    spy = ConfirmationSpy(store)
    try:
        with freeze_time(LATER) as frozen:
            # A slow provider (300 ms a message); in_7 is paid during the third message,
            # in_8 during the eighth (in_7's turn never comes, so it is the seventh sent).
            email = TimedEmail(
                frozen,
                timedelta(milliseconds=300),
                during={
                    3: lambda: settle(webhook, "in_7", "cus_7"),
                    7: lambda: settle(webhook, "in_8", "cus_8"),
                },
            )
            summary = run(spy, email)
    finally:
        webhook.close()

    unpaid = [day0[f"in_{n}"] for n in range(12) if n not in (7, 8)]
    assert (summary.due, summary.sent, summary.canceled) == (12, 10, 2)
    assert [step_id for step_id, _ in email.sent] == unpaid
    # One look per message, in order, and each sent message's look is the moment it was
    # handed over: no time at all for a payment to slip in unseen.
    assert [ids for _, ids in spy.looks] == [[day0[f"in_{n}"]] for n in range(12)]
    looked_at = {ids[0]: at for at, ids in spy.looks}
    assert [(step_id, looked_at[step_id]) for step_id, _ in email.sent] == email.sent
    assert {(store.get_step(i).status, store.get_step(i).attempts) for i in unpaid} == {("sent", 1)}
    for n in (7, 8):
        paid = store.get_step(day0[f"in_{n}"])
        assert (paid.status, paid.sent_at, paid.attempts) == ("canceled", None, 0)


def test_a_confirmation_counts_the_attempt_notes_it_and_renews_the_lease(store: Any) -> None:
    seed_unpaid(store, 2)
    claimed = store.claim_due_steps(
        now=LATER, lease_until=LATER + timedelta(minutes=10), run_id="run-a", limit=10
    )
    first, second = (item.step.id for item in claimed)
    later = LATER + timedelta(minutes=8)
    lease = later + timedelta(minutes=10)
    assert store.confirm_sends([first], "run-a", later, lease) == {first}
    confirmed = store.get_step(first)
    assert (confirmed.attempts, confirmed.confirmed_at, confirmed.lease_expires_at) == (
        1,
        later,
        lease,
    )
    assert confirmed.may_have_been_sent is True
    # The unconfirmed claim keeps its first lease and has no attempt counted.
    waiting = store.get_step(second)
    assert (waiting.attempts, waiting.confirmed_at, waiting.may_have_been_sent) == (0, None, False)
    # The first lease ran out at LATER + 10 min; only the confirmed step holds on.
    assert store.expire_leases(LATER + timedelta(minutes=15)) == 1
    assert store.get_step(first).status == "sending"
    assert store.confirm_sends([first], "run-b", later, lease) == set()  # not its claim
    settle(store, "in_0", "cus_0")
    assert store.confirm_sends([first], "run-a", later, lease) == set()
    assert store.get_step(first).attempts == 1
