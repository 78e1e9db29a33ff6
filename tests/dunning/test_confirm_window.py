"""A payment stops dunning however slow the provider: confirmations go stale after a bound.

On SQLite and PostgreSQL. Providers here take their time on freezegun's clock, not the wall's.
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
from cloudgreet_billing.services.dunning.run import (
    CONFIRM_GROUP,
    CONFIRMATION_FRESH_FOR,
    Channels,
    RunSummary,
    run_dunning,
)
from tests.dunning.conftest import T0, schedule, seed_invoice, settle

LATER = T0 + timedelta(minutes=5)


class ConfirmationSpy:
    """The store, noting each confirmation: which look, when, and for which steps."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.looks: list[tuple[str, datetime, list[int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def confirm_sends(
        self,
        step_ids: Sequence[int],
        run_id: str,
        now: datetime,
        lease_until: datetime | None = None,
    ) -> set[int]:
        self.looks.append(("confirm", now, list(step_ids)))
        return set(self._store.confirm_sends(step_ids, run_id, now, lease_until))

    def reconfirm_sends(
        self, step_ids: Sequence[int], run_id: str, now: datetime, lease_until: datetime
    ) -> set[int]:
        self.looks.append(("reconfirm", now, list(step_ids)))
        return set(self._store.reconfirm_sends(step_ids, run_id, now, lease_until))


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


def test_a_payment_during_a_slow_group_stops_its_later_message(store: Any) -> None:
    day0 = seed_unpaid(store, CONFIRM_GROUP)
    webhook = open_store(load_settings())  # the payment arrives over its own connection
    spy = ConfirmationSpy(store)
    try:
        with freeze_time(LATER) as frozen:
            # 150 ms a message, as SMTP or Twilio over the internet; the customer pays
            # in_7 while the third message of the group is on its way.
            email = TimedEmail(
                frozen,
                timedelta(milliseconds=150),
                during={3: lambda: settle(webhook, "in_7", "cus_7")},
            )
            summary = run(spy, email)
    finally:
        webhook.close()

    assert (summary.due, summary.sent, summary.canceled, summary.failed) == (10, 9, 1, 0)
    assert [step_id for step_id, _ in email.sent] == [day0[f"in_{n}"] for n in range(10) if n != 7]
    paid = store.get_step(day0["in_7"])
    assert (paid.status, paid.sent_at, paid.reason) == ("canceled", None, "invoice paid")
    # One attempt each, as with a single confirmation: looking again is not an attempt.
    sent = [store.get_step(day0[f"in_{n}"]) for n in range(10) if n != 7]
    assert [(s.status, s.attempts, s.provider_message_id) for s in sent] == [
        ("sent", 1, f"msg-{s.id}") for s in sent
    ]
    # No message left more than the bound after its last look.
    assert spy.looks[0] == ("confirm", LATER, [day0[f"in_{n}"] for n in range(10)])
    for step_id, sent_at in email.sent:
        last_look = max(at for _, at, ids in spy.looks if step_id in ids and at <= sent_at)
        assert sent_at - last_look <= CONFIRMATION_FRESH_FOR, (step_id, sent_at, last_look)


def test_with_a_fast_provider_each_group_is_confirmed_once(store: Any) -> None:
    day0 = seed_unpaid(store, 25)
    spy = ConfirmationSpy(store)
    with freeze_time(LATER) as frozen:
        email = TimedEmail(frozen, timedelta(milliseconds=1))  # file, console, local relay
        summary = run(spy, email)

    assert (summary.due, summary.sent) == (25, 25)
    ids = [day0[f"in_{n}"] for n in range(25)]
    assert [(kind, len(step_ids)) for kind, _, step_ids in spy.looks] == [
        ("confirm", 10),
        ("confirm", 10),
        ("confirm", 5),
    ]
    assert [step_id for _, _, step_ids in spy.looks for step_id in step_ids] == ids
    assert {(s.status, s.attempts) for s in store.list_steps(limit=None) if s.day == 0} == {
        ("sent", 1)
    }


def test_looking_again_renews_the_lease_without_counting_an_attempt(store: Any) -> None:
    seed_unpaid(store, 2)
    claimed = store.claim_due_steps(
        now=LATER, lease_until=LATER + timedelta(minutes=10), run_id="run-a", limit=10
    )
    ids = [item.step.id for item in claimed]
    assert store.confirm_sends(ids, "run-a", LATER) == set(ids)
    later = LATER + timedelta(minutes=8)
    lease = later + timedelta(minutes=10)
    assert store.reconfirm_sends(ids, "run-a", later, lease) == set(ids)
    assert [store.get_step(i).attempts for i in ids] == [1, 1]
    # The first lease ran out at LATER + 10 min; the renewed one holds until LATER + 18 min.
    assert store.expire_leases(LATER + timedelta(minutes=15)) == 0
    assert store.reconfirm_sends(ids, "run-b", later, lease) == set()  # not its claim
    settle(store, "in_1", "cus_1")
    assert store.reconfirm_sends(ids, "run-a", later, lease) == {ids[0]}
    assert [store.get_step(i).attempts for i in ids] == [1, 1]
