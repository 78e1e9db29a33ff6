"""Steps left mid-send wait in needs_review until a person deals with them, and every run
says so; the operator sees whether the provider may already have each message.

On SQLite and PostgreSQL, through the CLI.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from tests.dunning.conftest import T0, schedule, seed_invoice
from tests.dunning.stripe_objects import event, invoice_object, ndjson

runner = CliRunner()
LEASE = timedelta(minutes=10)
CONFIRMED = "in_1QpL8HLkdIwHu7ixConfirm1"
UNCONFIRMED = "in_1QpL8HLkdIwHu7ixNeverLef"


def invoke(*args: str, input: str | None = None) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"], input=input, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)["data"]


@pytest.fixture
def outbox(store_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outbox"
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "file")
    monkeypatch.setenv("BILLING_SMS_BACKEND", "file")
    monkeypatch.setenv("BILLING_OUTBOX_DIR", str(folder))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    return folder


def crash_mid_send(store: Any) -> dict[str, int]:
    """A run claims both invoices' day-0 steps, confirms one (its message was on its way)
    and dies before recording anything."""
    claimed = store.claim_due_steps(
        now=T0 + timedelta(minutes=1), lease_until=T0 + LEASE, run_id="dead-run", limit=10
    )
    steps = {item.step.invoice_id: item.step.id for item in claimed}
    assert store.confirm_sends([steps[CONFIRMED]], "dead-run", T0 + timedelta(minutes=1))
    return steps


def test_every_run_exits_4_while_steps_wait_for_review(store: Any, outbox: Path) -> None:
    for invoice_id, customer_id in (
        (CONFIRMED, "cus_RkS5AtmBK5hCe1"),
        (UNCONFIRMED, "cus_RkS5AtmBK5hCe2"),
    ):
        seed_invoice(store, invoice_id, customer_id)
        schedule(store, invoice_id, customer_id)
    steps = crash_mid_send(store)

    with freeze_time(T0 + timedelta(minutes=30)):
        code, first = invoke("dunning", "run")
    assert (code, first["needs_review"], first["leases_expired"], first["sent"]) == (4, 2, 2, 0)
    # The next run expires nothing new, and still says the two steps wait.
    with freeze_time(T0 + timedelta(minutes=40)):
        code, second = invoke("dunning", "run")
        human = runner.invoke(app, ["dunning", "run"], catch_exceptions=False)
    assert (code, second["needs_review"], second["leases_expired"]) == (4, 2, 0)
    assert human.exit_code == 4
    assert (
        "2 steps wait in needs_review: dunning list --status needs_review says whether "
        "each may have been sent"
    ) in human.stdout

    # The operator sees which message may have reached the provider.
    _, waiting = invoke("dunning", "list", "--status", "needs_review")
    assert {(s["invoice_id"], s["may_have_been_sent"]) for s in waiting} == {
        (CONFIRMED, True),
        (UNCONFIRMED, False),
    }
    reasons = {s["invoice_id"]: s["reason"] for s in waiting}
    assert reasons[UNCONFIRMED] == (
        "the run stopped before handing this message to any provider: requeue sends it"
    )
    assert reasons[CONFIRMED].startswith("the run stopped after confirming this message")

    # Dealt with: the confirmed one checked and marked sent, the other requeued.
    store.mark_step_sent(steps[CONFIRMED], ("needs_review",), "checked the SMTP log", T0)
    store.requeue_step(steps[UNCONFIRMED], ("needs_review",), T0)
    with freeze_time(T0 + timedelta(minutes=50)):
        code, third = invoke("dunning", "run")
    assert (code, third["needs_review"], third["sent"]) == (0, 0, 1)


def test_the_listing_shows_whether_each_waiting_step_may_have_been_sent(store: Any) -> None:
    for invoice_id, customer_id in (
        (CONFIRMED, "cus_RkS5AtmBK5hCe1"),
        (UNCONFIRMED, "cus_RkS5AtmBK5hCe2"),
    ):
        seed_invoice(store, invoice_id, customer_id)
        schedule(store, invoice_id, customer_id)
    crash_mid_send(store)
    store.expire_leases(T0 + timedelta(minutes=30))
    result = runner.invoke(app, ["dunning", "list", "--status", "needs_review"])
    assert result.exit_code == 0
    # Not a terminal: tab-separated rows under a header line.
    header, *rows = (line.split("\t") for line in result.stdout.splitlines())
    assert "may be sent" in header
    shown = {row[header.index("invoice")]: row[header.index("may be sent")] for row in rows}
    assert shown == {
        CONFIRMED: "yes",
        UNCONFIRMED: "no",
    }


def test_alerts_show_says_whether_a_waiting_step_may_have_been_sent(store_env: str) -> None:
    invoice = invoice_object(finalized_at=T0)
    code, _ = invoke(
        "sync",
        "--events-file",
        "-",
        input=ndjson(event("evt_1QpL8ILkdIwHu7ixFailed01", "invoice.payment_failed", invoice, T0)),
    )
    assert code == 0
    _, [alert] = invoke("alerts", "list")
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    store = open_store(load_settings())
    try:
        store.claim_due_steps(
            now=T0 + timedelta(minutes=1), lease_until=T0 + LEASE, run_id="dead-run", limit=1
        )
        store.expire_leases(T0 + timedelta(minutes=30))
    finally:
        store.close()
    _, shown = invoke("alerts", "show", str(alert["id"]))
    assert [(s["day"], s["status"], s["may_have_been_sent"]) for s in shown["dunning_steps"]] == [
        (0, "needs_review", False),
        (1, "scheduled", None),
        (3, "scheduled", None),
    ]
    human = runner.invoke(app, ["alerts", "show", str(alert["id"])], catch_exceptions=False)
    assert "needs_review, due" in human.stdout
    assert "(never handed to a provider: requeue is safe)" in human.stdout
