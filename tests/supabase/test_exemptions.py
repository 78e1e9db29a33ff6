"""The Supabase store's dunning exemptions (ExemptionsOps) through the real ``supabase``
client and the PostgREST stand-in on a real PostgreSQL, beyond the store contract
(``tests/store/test_contract_exemptions.py``): listings past the row cap, an unknown or
malformed customer refused with nothing written, an exempt whose answer is lost sent
again, exempts and unexempts racing on the functions themselves, and a dunning run
through REST skipping the customers exempt before it and while it sends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloudgreet_billing.adapters.notify.sms_console import ConsoleSmsSender
from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.adapters.store.supabase.client import SupabaseApi
from cloudgreet_billing.adapters.store.supabase.errors import DataRefused
from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore
from cloudgreet_billing.domain.dunning import DunningConfig
from cloudgreet_billing.domain.exemptions import Exemption
from cloudgreet_billing.errors import NotFound, Unavailable
from cloudgreet_billing.services.actions.common import Safety
from cloudgreet_billing.services.dunning.exemptions import exempt, list_exemptions, unexempt
from cloudgreet_billing.services.dunning.messages import MessageBook
from cloudgreet_billing.services.dunning.run import Channels, run_dunning
from tests.dunning.conftest import T0, schedule, seed_invoice
from tests.postgrest.server import Fault

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
PLAN = "cus_QpL8HLkdIwHu7i"
EXEMPT = "^/rpc/billing_api_exempt_customer"
LIST = "^/rpc/billing_api_list_exemptions"


def customer_id(n: int) -> str:
    return f"cus_QpL8HL{n:08d}"


@pytest.fixture
def owner(postgrest: Any, supabase_store: Any) -> Iterator[PostgresStore]:
    """The project's database as its owner sees it (the SQL editor)."""
    store = PostgresStore(postgrest.database_url)
    yield store
    store.close()


def trail(owner: PostgresStore, target: str) -> list[tuple[str, str, str]]:
    return [(a.action, a.outcome, a.actor) for a in owner.audit_trail(target)]


def test_exemptions_are_listed_whole_past_the_row_cap(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    # 620 exemptions under a row cap of 50, a second apart, the newest first in id order.
    postgrest.max_rows = 50
    count = 620
    with psycopg.connect(postgrest.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO billing_dunning_exemptions (customer_id, reason, actor, created_at) "
            "SELECT 'cus_QpL8HL' || lpad(n::text, 8, '0'), 'payment plan', 'alice', "
            "%s::timestamptz - n * interval '1 second' FROM generate_series(0, %s) n",
            (NOW, count - 1),
        )
    listed = supabase_store.list_exemptions()
    assert listed == owner.list_exemptions()
    assert [e.customer_id for e in listed] == [customer_id(n) for n in reversed(range(count))]
    assert listed[0].created_at == NOW - timedelta(seconds=count - 1)
    assert supabase_store.list_exemptions(limit=70) == listed[:70]
    # More ids than one call carries (500), most of them not exempt.
    asked = [customer_id(n) for n in range(0, 2 * count, 2)]
    assert supabase_store.list_exemptions(customer_ids=asked) == [
        e for e in listed if e.customer_id in set(asked)
    ]
    assert supabase_store.count_exemptions() == count
    shown = list_exemptions(supabase_store, limit=600)
    assert (len(shown.exemptions), shown.total) == (600, count)


def test_an_unknown_customer_is_refused_and_nothing_written(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    # No mirrored customer and no dunning steps: more often a typo than a plan agreed.
    with pytest.raises(NotFound, match=f"customer {PLAN} is not in supabase"):
        exempt(
            supabase_store,
            PLAN,
            reason="payment plan",
            actor="alice",
            now=NOW,
            safety=Safety(assume_yes=True),
        )
    assert not postgrest.requests_to(EXEMPT)
    assert owner.get_exemption(PLAN) is None
    assert trail(owner, PLAN) == []


def test_an_id_that_is_no_customer_is_refused_by_the_database_as_on_postgresql(
    supabase_store: Any, owner: PostgresStore
) -> None:
    invoice = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
    with pytest.raises(DataRefused) as refused:
        supabase_store.exempt_customer(invoice, reason="payment plan", actor="alice", now=NOW)
    assert refused.value.sqlstate == "23514"  # the table's CHECK (customer_id LIKE 'cus\_%')
    with pytest.raises(psycopg.errors.CheckViolation):
        owner.exempt_customer(invoice, reason="payment plan", actor="alice", now=NOW)
    assert owner.count_exemptions() == 0
    assert trail(owner, invoice) == []


def test_an_exempt_whose_answer_is_lost_is_safe_to_send_again(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    # postgrest-py never retries a POST: the caller repeats it, and the repeat keeps the
    # first exemption, audited as exempting twice is on the SQL store.
    postgrest.inject(Fault(method="POST", path=EXEMPT, drop=True, after_commit=True))
    with pytest.raises(Unavailable):
        supabase_store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=NOW)
    again = supabase_store.exempt_customer(
        PLAN, reason="payment plan", actor="alice", now=NOW + timedelta(seconds=30)
    )
    assert not again.created
    assert again.exemption == Exemption(PLAN, "payment plan", "alice", NOW)
    assert trail(owner, PLAN) == [
        ("dunning.exempt", "exempted", "alice"),
        ("dunning.exempt", "already_exempt", "alice"),
    ]


def test_an_exempt_that_keeps_losing_to_unexempts_asks_for_a_retry_and_writes_nothing(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    # As an unexempt deleting the row each time between the insert that met it and the
    # read: here a trigger makes every insert vanish, so neither finds a row.
    postgrest.sql(
        "CREATE FUNCTION vanish() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RETURN NULL; END $$; "
        "CREATE TRIGGER vanish BEFORE INSERT ON billing_dunning_exemptions "
        "FOR EACH ROW EXECUTE FUNCTION vanish()"
    )
    with pytest.raises(Unavailable, match="raced an unexempt 3 times") as raced:
        supabase_store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=NOW)
    assert (raced.value.code, raced.value.hint) == ("store_unavailable", "retry later")
    assert trail(owner, PLAN) == []


def test_exempts_and_unexempts_racing_leave_the_log_true_to_the_row(postgrest: Any) -> None:
    # Eight sessions exempt and unexempt one customer at once, through the functions on
    # PostgreSQL: each call ends (an exempt whose row an unexempt deleted tries again),
    # and the audit log accounts for the row.
    owner = PostgresStore(postgrest.database_url)
    owner.migrate()
    owner.close()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            with psycopg.connect(postgrest.database_url, autocommit=True) as conn:
                start.wait()
                for round_ in range(25):
                    at = NOW + timedelta(seconds=round_)
                    if (n + round_) % 2:
                        conn.execute(
                            "SELECT billing_api_exempt_customer(%s, %s, %s, %s)",
                            (PLAN, f"plan {n}", f"worker {n}", at),
                        )
                    else:
                        conn.execute(
                            "SELECT billing_api_unexempt_customer(%s, %s, %s)",
                            (PLAN, f"worker {n}", at),
                        )
        except BaseException as exc:  # the assertion below names it
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    rows = postgrest.sql(
        "SELECT outcome FROM billing_audit_log WHERE target = %s ORDER BY id", (PLAN,)
    )
    assert len(rows) == 8 * 25
    outcomes = [outcome for (outcome,) in rows]
    assert set(outcomes) <= {"exempted", "already_exempt", "unexempted", "not_exempt"}
    # Each exemption created is audited once and each ended once: what is left is the row.
    held = postgrest.sql("SELECT count(*) FROM billing_dunning_exemptions")
    assert held == [(outcomes.count("exempted") - outcomes.count("unexempted"),)]


# --- a run through REST ---------------------------------------------------------------

OTHER = "cus_Rq2mXk9fLw3ZtA"
LATE = "cus_Sx7bNn4gYh1CvE"


class ExemptingEmail:
    """An email provider that records each message; while the first is on its way, the
    operator exempts ``LATE`` on a client of their own."""

    name = "recording"

    def __init__(self, operator: Any, now: datetime) -> None:
        self.operator, self.now = operator, now
        self.sent: list[int | None] = []

    def send(self, email: Any) -> str:
        self.sent.append(email.step_id)
        if len(self.sent) == 1:
            self.operator.exempt_customer(LATE, reason="VIP", actor="bob", now=self.now)
        return f"<dunning-{email.step_id}@cloudgreet.test>"

    def close(self) -> None:
        return None


def test_a_run_through_rest_skips_the_exempt_and_those_exempted_while_it_sends(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    invoices = {
        PLAN: "in_1QpL8HLkdIwHu7ixl4OzzPMv",
        OTHER: "in_1Rq2mXk9fLw3ZtAb7VbHjKqe",
        LATE: "in_1Sx7bNn4gYh1CvEw2XcLpQrs",
    }
    for customer, invoice in invoices.items():
        seed_invoice(owner, invoice, customer)
        schedule(owner, invoice, customer)
    yes = Safety(assume_yes=True)
    exempt(supabase_store, PLAN, reason="payment plan", actor="alice", now=T0, safety=yes)
    operator = SupabaseStore(postgrest.url, postgrest.keys.secret)
    operator._api = SupabaseApi(postgrest.url, postgrest.keys.secret)
    moment = T0 + timedelta(minutes=5)
    email = ExemptingEmail(operator, moment)
    try:
        summary = run_dunning(
            supabase_store,
            Channels(email=email, sms=ConsoleSmsSender()),
            DunningConfig(),
            MessageBook(),
            actor="cron",
            clock=lambda: moment,
        )
    finally:
        operator._api.close()
    assert (summary.due, summary.sent, summary.skipped, summary.exempt) == (3, 1, 2, 2)
    reasons = {
        customer: next(
            (s.day, s.status, s.reason, s.attempts)
            for s in owner.list_steps(invoice_id=invoice, limit=None)
            if s.day == 0
        )
        for customer, invoice in invoices.items()
    }
    assert reasons == {
        PLAN: (0, "skipped", "customer exempt: payment plan (by alice)", 0),
        OTHER: (0, "sent", None, 1),
        LATE: (0, "skipped", "customer exempt: VIP (by bob)", 0),
    }
    assert [owner.get_step(step_id).customer_id for step_id in email.sent] == [OTHER]
    # Unexempted: the steps still to come go out when due; the skipped one stays skipped.
    ended = unexempt(supabase_store, PLAN, actor="carol", now=moment, safety=yes)
    assert (ended.ended is not None, ended.scheduled, ended.due) == (True, 2, 0)
    assert trail(owner, PLAN) == [
        ("dunning.exempt", "exempted", "alice"),
        ("dunning.unexempt", "unexempted", "carol"),
    ]


# --- the commands, with only the Supabase variables -------------------------------------


def test_exempt_exemptions_and_unexempt_through_rest_as_an_operator_types_them(
    supabase_store: Any, owner: PostgresStore, postgrest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from freezegun import freeze_time

    from tests.cli.helpers import data, run

    monkeypatch.setenv("SUPABASE_URL", postgrest.url)
    monkeypatch.setenv("SUPABASE_SECRET_KEY", postgrest.keys.secret)
    monkeypatch.setenv("BILLING_ACTOR", "tester@ci")
    seed_invoice(owner, "in_1QpL8HLkdIwHu7ixl4OzzPMv", PLAN)
    schedule(owner, "in_1QpL8HLkdIwHu7ixl4OzzPMv", PLAN)
    with freeze_time(T0):
        made = data(run("dunning", "exempt", PLAN, "--reason", "payment plan", "--yes", "--json"))
    assert made["customer_id"] == PLAN and made["created_at"] == "2026-03-02T09:00:00Z"
    # A typo of the id: refused in one line with the fix, nothing written.
    typo = "cus_QpL8HLkdIwHu7j"
    refused = run("dunning", "exempt", typo, "--reason", "payment plan", "--yes", "--json")
    assert refused.exit_code == 2
    error = json.loads(refused.stdout)["error"]
    assert (error["code"], error["message"].startswith(f"customer {typo} is not in supabase")) == (
        "not_found",
        True,
    )
    assert "Traceback" not in refused.stdout + refused.stderr
    listed = data(run("dunning", "exemptions", "--json"))
    assert listed == [
        {
            "customer_id": PLAN,
            "reason": "payment plan",
            "actor": "tester@ci",
            "created_at": "2026-03-02T09:00:00Z",
        }
    ]
    with freeze_time(T0 + timedelta(hours=5)):
        ended = data(run("dunning", "unexempt", PLAN, "--yes", "--json"))
    assert (ended["was_exempt"], ended["scheduled"]) == (True, 3)
    assert owner.list_exemptions() == []
    assert [(a.action, a.outcome, a.actor) for a in owner.audit_trail(PLAN)] == [
        ("dunning.exempt", "exempted", "tester@ci"),
        ("dunning.unexempt", "unexempted", "tester@ci"),
    ]
    assert postgrest.requests_to(EXEMPT, "POST")
