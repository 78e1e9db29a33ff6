"""Dunning exemptions (issue 15) end to end, on SQLite and PostgreSQL: `dunning exempt`,
`unexempt` and `exemptions` as an operator types them, and what `dunning run` and
`dunning list` then do, through the file outbox a real run writes to."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner, Result

from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.cli import app
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice
from tests.dunning.conftest import T0, SmtpSink, run_counts, schedule, seed_invoice
from tests.dunning.test_concurrency import run_env, start_run
from tests.dunning.test_confirm_window import LATER, TimedEmail, run

PLAN = "cus_QpL8HLkdIwHu7i"
OTHER = "cus_Rq2mXk9fLw3ZtA"
INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
OTHER_INVOICE = "in_1Rq2mXk9fLw3ZtAb7VbHjKqe"
REASON = "customer exempt: payment plan until 2027-01 (by tester@ci)"


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def data(result: Result) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)["data"]


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)


def trail(store: Any, customer_id: str = PLAN) -> list[tuple[str, str]]:
    return [(a.action, a.outcome) for a in store.audit_trail(customer_id)]


def steps(store: Any, invoice_id: str = INVOICE) -> list[tuple[int, str, str | None]]:
    return [
        (s.day, s.status, s.reason) for s in store.list_steps(invoice_id=invoice_id, limit=None)
    ]


def emails_to(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(
        line.removeprefix("To: ")
        for path in folder.glob("*.eml")
        for line in path.read_text().splitlines()
        if line.startswith("To: ")
    )


@pytest.fixture
def outbox(store_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outbox"
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "file")
    monkeypatch.setenv("BILLING_SMS_BACKEND", "file")
    monkeypatch.setenv("BILLING_OUTBOX_DIR", str(folder))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    return folder


@pytest.fixture
def two_customers(store: Any) -> Any:
    """Two unpaid invoices, each with the default timeline from T0."""
    seed_invoice(store, INVOICE, PLAN, email="ada@example.com")
    schedule(store, INVOICE, PLAN)
    seed_invoice(store, OTHER_INVOICE, OTHER, email="grace@example.com", name="Grace Hopper")
    schedule(store, OTHER_INVOICE, OTHER)
    return store


def exempt_plan() -> Any:
    with freeze_time(T0 - timedelta(hours=1)):
        return data(
            cli(
                "dunning",
                "exempt",
                PLAN,
                "--reason",
                "payment plan until 2027-01",
                "--yes",
                "--json",
            )
        )


# --- exempt --------------------------------------------------------------------------


def test_exempt_needs_yes_without_a_terminal_and_changes_nothing(two_customers: Any) -> None:
    result = cli("dunning", "exempt", PLAN, "--reason", "payment plan")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[-1] == (
        f"error: exempting {PLAN} from dunning; not running without confirmation (no "
        "terminal to ask on) (re-run with --yes, or on a terminal to be asked)"
    )
    assert two_customers.get_exemption(PLAN) is None
    assert trail(two_customers) == [("dunning.exempt", "refused")]


def test_exempt_on_a_terminal_shows_the_customer_and_no_means_no(
    two_customers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_a_terminal(monkeypatch)
    declined = cli("dunning", "exempt", PLAN, "--reason", "payment plan", input="n\n")
    assert declined.exit_code == 3
    assert f"customer: {PLAN} (Ada Lovelace · ada@example.com)" in declined.stderr
    assert (
        f"Exempt {PLAN} from dunning (payment plan)? Their 3 scheduled reminders are "
        "skipped when due, until `dunning unexempt`." in declined.stderr
    )
    assert "exempt canceled at the prompt; the customer is not exempt" in declined.stderr
    assert two_customers.get_exemption(PLAN) is None
    accepted = cli("dunning", "exempt", PLAN, "--reason", "payment plan", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert f"{PLAN} exempt from dunning by tester@ci: payment plan;" in accepted.stdout
    assert trail(two_customers) == [
        ("dunning.exempt", "declined_at_prompt"),
        ("dunning.exempt", "exempted"),
    ]


def test_exempt_json_and_a_second_exempt_keeps_the_first(two_customers: Any) -> None:
    assert exempt_plan() == {
        "customer_id": PLAN,
        "reason": "payment plan until 2027-01",
        "actor": "tester@ci",
        "created_at": "2026-03-02T08:00:00Z",
        "already_exempt": False,
    }
    refused = cli("dunning", "exempt", PLAN, "--reason", "VIP", "--json")
    assert refused.exit_code == 3
    error = json.loads(refused.stdout)["error"]
    assert error["message"] == (
        f"{PLAN} is already exempt, by tester@ci at 2026-03-02T08:00:00Z: payment plan "
        "until 2027-01; not running without confirmation (no terminal to ask on)"
    )
    assert error["hint"] == (
        "that exemption stays as it is; --yes notes your reason beside it in the audit log"
    )
    again = cli("dunning", "exempt", PLAN, "--reason", "VIP", "--yes", "--json", input=None)
    assert data(again) == {
        "customer_id": PLAN,
        "reason": "payment plan until 2027-01",
        "actor": "tester@ci",
        "created_at": "2026-03-02T08:00:00Z",
        "already_exempt": True,
    }
    # The refusal and the note each keep the reason given; the exemption keeps the first.
    assert [
        (a.outcome, a.details.get("given_reason") or a.details["reason"])
        for a in two_customers.audit_trail(PLAN)
    ] == [
        ("exempted", "payment plan until 2027-01"),
        ("refused", "VIP"),
        ("already_exempt", "VIP"),
    ]
    assert two_customers.get_exemption(PLAN).reason == "payment plan until 2027-01"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["in_1QpL8HLkdIwHu7ixl4OzzPMv", "--reason", "x"],
            "CUSTOMER_ID 'in_1QpL8HLkdIwHu7ixl4OzzPMv' is not a Stripe customer id (cus_…)",
        ),
        (
            ["cus_../../etc", "--reason", "x"],
            "CUSTOMER_ID 'cus_../../etc' is not a Stripe customer id (cus_…)",
        ),
        (
            [PLAN, "--reason", "plan\nDROP TABLE"],
            "--reason 'plan\\nDROP TABLE' contains a control character (U+000A, '\\n') "
            "at position 4",
        ),
        ([PLAN, "--reason", "   "], "--reason must say why the customer is not reminded"),
    ],
)
def test_exempt_refuses_bad_input_before_writing_anything(
    two_customers: Any, args: list[str], message: str
) -> None:
    before = two_customers.row_counts()
    result = cli("dunning", "exempt", *args, "--yes", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["message"] == message
    assert "Traceback" not in result.stdout + result.stderr
    assert two_customers.row_counts() == before


def test_exempt_refuses_a_customer_the_store_knows_nothing_of(two_customers: Any) -> None:
    typo = "cus_QpL8HLkdIwHu7j"
    result = cli("dunning", "exempt", typo, "--reason", "payment plan", "--yes", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "not_found"
    assert error["message"].startswith(f"customer {typo} is not in ")
    assert "sync --backfill" in error["hint"]
    assert two_customers.list_exemptions() == []


# --- dunning run -----------------------------------------------------------------------


def test_a_run_skips_an_exempt_customers_due_steps_with_the_reason(
    two_customers: Any, outbox: Path
) -> None:
    exempt_plan()
    with freeze_time(T0 + timedelta(minutes=5)):
        summary = data(cli("dunning", "run", "--json"))
    assert {k: v for k, v in summary.items() if k not in ("run_id", "errors")} == run_counts(
        due=2, sent=1, skipped=1, exempt=1
    )
    assert emails_to(outbox) == ["grace@example.com"]
    assert steps(two_customers) == [
        (0, "skipped", REASON),
        (1, "scheduled", None),
        (3, "scheduled", None),
    ]
    with freeze_time(T0 + timedelta(minutes=6)):
        human = cli("dunning", "run")
    assert human.stdout.startswith("0 due: 0 sent, 0 skipped, 0 failed")
    with freeze_time(T0 + timedelta(days=1, minutes=1)):
        result = cli("dunning", "run")
    assert result.exit_code == 0
    assert result.stdout.startswith("2 due: 1 sent, 1 skipped (1 exempt), 0 failed, 0 canceled")


def test_after_unexempt_the_skipped_step_stays_skipped_and_the_next_one_is_sent(
    two_customers: Any, outbox: Path
) -> None:
    exempt_plan()
    with freeze_time(T0 + timedelta(minutes=5)):
        data(cli("dunning", "run", "--json"))
    with freeze_time(T0 + timedelta(hours=5)):
        ended = data(cli("dunning", "unexempt", PLAN, "--yes", "--json"))
    assert ended == {
        "customer_id": PLAN,
        "exempt": False,
        "was_exempt": True,
        "ended": {
            "customer_id": PLAN,
            "reason": "payment plan until 2027-01",
            "actor": "tester@ci",
            "created_at": "2026-03-02T08:00:00Z",
        },
        "scheduled": 2,
        "due": 0,
    }
    with freeze_time(T0 + timedelta(days=3, minutes=1)):
        summary = data(cli("dunning", "run", "--json"))
    # Day 1's SMS and day 3's email of both invoices: catching up sends only day 3.
    assert (summary["sent"], summary["exempt"]) == (2, 0)
    assert steps(two_customers) == [
        (0, "skipped", REASON),
        (1, "skipped", "superseded"),
        (3, "sent", None),
    ]
    assert emails_to(outbox) == ["ada@example.com", "grace@example.com", "grace@example.com"]


def test_an_exemption_committed_while_the_run_sends_stops_the_next_message(store: Any) -> None:
    for n, customer in enumerate((OTHER, PLAN, "cus_Sx7bNn4gYh1CvE")):
        seed_invoice(store, f"in_1QpL8HLkdIwHu7ixl4Ozz00{n}", customer)
        schedule(store, f"in_1QpL8HLkdIwHu7ixl4Ozz00{n}", customer)
    operator = open_store(load_settings())  # the operator's own connection
    try:
        with freeze_time(LATER) as frozen:
            # PLAN is exempted while the first message is on its way (40 ms): its turn
            # comes next, after the run claimed it, and its confirmation sees the exemption.
            email = TimedEmail(
                frozen,
                timedelta(milliseconds=40),
                during={
                    1: lambda: operator.exempt_customer(
                        PLAN, reason="VIP", actor="alice", now=LATER
                    )
                },
            )
            summary = run(store, email)
    finally:
        operator.close()
    assert (summary.due, summary.sent, summary.skipped, summary.exempt) == (3, 2, 1, 1)
    exempt_step = store.list_steps(customer_id=PLAN, statuses=("skipped",), limit=None)
    assert [(s.day, s.reason, s.attempts) for s in exempt_step] == [
        (0, "customer exempt: VIP (by alice)", 0)
    ]
    assert PLAN not in {store.get_step(step_id).customer_id for step_id, _ in email.sent}


def test_a_dry_run_plans_the_exempt_steps_as_exempt(two_customers: Any) -> None:
    exempt_plan()
    with freeze_time(T0 + timedelta(minutes=5)):
        plan = data(cli("dunning", "run", "--dry-run", "--json"))
        human = cli("dunning", "run", "--dry-run")
    assert [(p["customer_id"], p["action"], p["reason"]) for p in plan["planned"]] == [
        (PLAN, "exempt", REASON),
        (OTHER, "send", None),
    ]
    assert (plan["would_send"], plan["skipped"], plan["exempt"]) == (1, 1, 1)
    assert "1 skipped (0 undeliverable, 1 exempt)" in human.stdout
    assert steps(two_customers)[0] == (0, "scheduled", None)


def test_an_exempt_customer_is_not_escalated_until_unexempt(
    two_customers: Any, outbox: Path
) -> None:
    exempt_plan()
    with freeze_time(T0 + timedelta(days=4)):
        summary = data(cli("dunning", "run", "--json"))
    assert (summary["exempt"], summary["escalated"]) == (3, 1)  # OTHER's invoice only
    assert [s[1] for s in steps(two_customers)] == ["skipped"] * 3
    with freeze_time(T0 + timedelta(days=4, hours=1)):
        data(cli("dunning", "unexempt", PLAN, "--yes", "--json"))
        summary = data(cli("dunning", "run", "--json"))
    # Its reminders ran out while it was exempt: a person decides (requeue, retry, portal).
    assert (summary["due"], summary["escalated"]) == (0, 1)
    [alert] = two_customers.list_alerts(
        AlertQuery(invoice_id=INVOICE, types=("dunning_exhausted",), statuses=None)
    )
    assert (alert.customer_id, alert.status) == (PLAN, "open")


# --- unexempt ---------------------------------------------------------------------------


def test_unexempt_needs_yes_and_a_customer_not_exempt_is_told_so(two_customers: Any) -> None:
    exempt_plan()
    with freeze_time(T0):
        refused = cli("dunning", "unexempt", PLAN)
    assert refused.exit_code == 3
    assert f"error: unexempting {PLAN}; not running without confirmation" in refused.stderr
    assert two_customers.get_exemption(PLAN) is not None
    with freeze_time(T0 + timedelta(days=1, hours=2)):
        done = cli("dunning", "unexempt", PLAN, "--yes")
    assert done.exit_code == 0, done.output
    assert done.stdout.replace("\n", " ").startswith(
        f"{PLAN} is reminded again (was exempt, by tester@ci at 2026-03-02 08:00 UTC: "
        "payment plan until 2027-01); 3 scheduled steps go out when due, 2 of them at the "
        "next dunning run"
    )
    again = cli("dunning", "unexempt", OTHER, "--json")
    assert data(again)["was_exempt"] is False
    assert cli("dunning", "unexempt", OTHER).stdout == f"{OTHER} is not exempt; nothing changed\n"
    assert trail(two_customers) == [
        ("dunning.exempt", "exempted"),
        ("dunning.unexempt", "refused"),
        ("dunning.unexempt", "unexempted"),
    ]
    assert trail(two_customers, OTHER) == [
        ("dunning.unexempt", "not_exempt"),
        ("dunning.unexempt", "not_exempt"),
    ]


def test_unexempt_on_a_terminal_says_what_will_go_out(
    two_customers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    exempt_plan()
    on_a_terminal(monkeypatch)
    with freeze_time(T0 + timedelta(hours=2)):
        declined = cli("dunning", "unexempt", PLAN, input="n\n")
    assert declined.exit_code == 3
    assert (
        f"End the exemption ({PLAN} is exempt, by tester@ci at 2026-03-02T08:00:00Z: payment "
        "plan until 2027-01)? Their 3 scheduled reminders go out when due; 1 of them is due "
        "now and the next run sends it." in declined.stderr.replace("\n", " ")
    )
    assert "unexempt canceled at the prompt; the customer stays exempt" in declined.stderr
    assert two_customers.get_exemption(PLAN) is not None


# --- listings ---------------------------------------------------------------------------


def test_dunning_list_shows_the_exemption_on_that_customers_steps(two_customers: Any) -> None:
    exempt_plan()
    listed = data(cli("dunning", "list", "--json"))
    fields = {(s["customer_id"], s["exempt_reason"], s["exempt_by"]) for s in listed}
    assert fields == {
        (PLAN, "payment plan until 2027-01", "tester@ci"),
        (OTHER, None, None),
    }
    rows = cli("dunning", "list", "--customer", PLAN).stdout.splitlines()
    assert rows[0].split("\t")[-1] == "exempt"
    assert {row.split("\t")[-1] for row in rows[1:]} == {
        "payment plan until 2027-01 (by tester@ci)"
    }
    other = cli("dunning", "list", "--customer", OTHER).stdout.splitlines()
    assert {row.split("\t")[-1] for row in other[1:]} == {""}


def test_dunning_exemptions_lists_who_and_why(two_customers: Any) -> None:
    assert data(cli("dunning", "exemptions", "--json")) == []
    empty = cli("dunning", "exemptions")
    assert (empty.exit_code, empty.stdout) == (0, "")
    assert "no customer is exempt from dunning" in empty.stderr
    exempt_plan()
    with freeze_time(T0):
        data(cli("dunning", "exempt", OTHER, "--reason", "VIP", "--yes", "--json"))
    assert data(cli("dunning", "exemptions", "--json")) == [
        {
            "customer_id": PLAN,
            "reason": "payment plan until 2027-01",
            "actor": "tester@ci",
            "created_at": "2026-03-02T08:00:00Z",
        },
        {
            "customer_id": OTHER,
            "reason": "VIP",
            "actor": "tester@ci",
            "created_at": "2026-03-02T09:00:00Z",
        },
    ]
    piped = cli("dunning", "exemptions", "--limit", "1")
    assert piped.stdout.splitlines() == [
        "customer\tsince\tby\treason",
        f"{PLAN}\t2026-03-02T08:00:00Z\ttester@ci\tpayment plan until 2027-01",
    ]
    assert "showing 1 of 2 (--limit)" in piped.stderr


# --- several workers ---------------------------------------------------------------------


@pytest.mark.postgres
def test_concurrent_runs_never_remind_an_exempt_customer(
    postgres_url: str, smtp_server: SmtpSink
) -> None:
    """Four runs as cron starts them: one customer exempt before, one exempted while the
    runs send. Nobody exempt before is written to; after the second exemption commits,
    only messages already confirmed (at most one per run) reach that customer."""
    from cloudgreet_billing.adapters.store.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    store.migrate()
    customers = (PLAN, OTHER, "cus_Sx7bNn4gYh1CvE")
    now = utcnow()
    for customer in customers:
        store.upsert_customer(
            parse_customer(
                {"id": customer, "email": f"{customer}@example.com", "created": 1_780_000_000}
            ),
            now,
            now,
        )
    invoices = [
        parse_invoice(
            {
                "id": f"in_1QpL8HLkdIwHu7ixl4O{n:05d}",
                "customer": customers[n % 3],
                "status": "open",
                "currency": "usd",
                "amount_due": 5000,
                "amount_remaining": 5000,
                "hosted_invoice_url": f"https://invoice.stripe.com/i/{n}",
                "created": 1_780_000_000,
            }
        )
        for n in range(300)
    ]
    store.upsert_invoices(invoices, now, now)
    store.schedule_steps(
        [
            draft
            for invoice in invoices
            for draft in TimelinePlanner()(
                invoice_id=invoice.id,
                customer_id=str(invoice.customer_id),
                alert_id=None,
                first_failed_at=now - timedelta(hours=1),
            )
            if draft.day == 0
        ],
        now,
    )
    store.exempt_customer(PLAN, reason="payment plan", actor="alice", now=now)
    customer_of = {s.id: s.customer_id for s in store.list_steps(statuses=None, limit=None)}
    operator = PostgresStore(postgres_url)
    late: list[int] = []

    def exempt_other_midway(item: Any) -> None:
        if len(smtp_server.received) == 40 and not operator.get_exemption(OTHER):
            operator.exempt_customer(OTHER, reason="VIP", actor="bob", now=utcnow())
            late.append(len(smtp_server.received))

    smtp_server.on_message = exempt_other_midway
    env = run_env(postgres_url, smtp_server.port)
    runs = [start_run(env) for _ in range(4)]
    summaries = []
    for process in runs:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        summaries.append(json.loads(stdout)["data"])
    smtp_server.on_message = None
    operator.close()

    received = smtp_server.step_ids()
    assert Counter(received).most_common(1)[0][1] == 1, "a step was delivered twice"
    to = [customer_of[step_id] for step_id in received]
    assert PLAN not in to
    after = to[late[0] :]
    assert after.count(OTHER) <= 4
    final = store.list_steps(statuses=None, limit=None)
    assert {s.status for s in final if s.customer_id == "cus_Sx7bNn4gYh1CvE"} == {"sent"}
    assert {(s.status, s.reason) for s in final if s.customer_id == PLAN} == {
        ("skipped", "customer exempt: payment plan (by alice)")
    }
    other = Counter((s.status, s.reason) for s in final if s.customer_id == OTHER)
    assert set(other) == {("sent", None), ("skipped", "customer exempt: VIP (by bob)")}
    assert (
        sum(s["exempt"] for s in summaries)
        == 100 + other[("skipped", "customer exempt: VIP (by bob)")]
    )
    assert (
        sum(s["sent"] for s in summaries)
        == len(received)
        == 300 - sum(s["exempt"] for s in summaries)
    )
    store.close()
