"""Runs as cron starts them: separate processes, concurrently, and killed mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice
from tests.dunning.conftest import SmtpSink

REPO = Path(__file__).resolve().parents[2]


def seed_due(store: Any, invoices: int) -> list[int]:
    """``invoices`` unpaid invoices whose day-0 email is due now; returns those step ids."""
    now = utcnow()
    store.upsert_customer(
        parse_customer({"id": "cus_bulk", "email": "payer@example.com", "created": 1_780_000_000}),
        now,
        now,
    )
    mirrored = [
        parse_invoice(
            {
                "id": f"in_{n:05d}",
                "customer": "cus_bulk",
                "status": "open",
                "currency": "usd",
                "amount_due": 5000,
                "amount_remaining": 5000,
                "hosted_invoice_url": f"https://invoice.stripe.com/i/{n}",
                "created": 1_780_000_000,
            }
        )
        for n in range(invoices)
    ]
    store.upsert_invoices(mirrored, now, now)
    planner = TimelinePlanner()
    drafts = [
        draft
        for invoice in mirrored
        for draft in planner(
            invoice_id=invoice.id,
            customer_id="cus_bulk",
            alert_id=None,
            first_failed_at=now - timedelta(hours=1),
        )
    ]
    store.schedule_steps(drafts, now)
    return [s.id for s in store.list_steps(statuses=("scheduled",), limit=None) if s.day == 0]


def run_env(database_url: str, smtp_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "BILLING_DATABASE_URL": database_url,
            "BILLING_EMAIL_BACKEND": "smtp",
            "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "EMAIL_FROM": "billing@cloudgreet.test",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloudgreet_billing", "dunning", "run", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.postgres
def test_four_concurrent_runs_deliver_each_step_exactly_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpSink
) -> None:
    from cloudgreet_billing.adapters.store.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    store.migrate()
    due = seed_due(store, 1000)
    assert len(due) == 1000

    env = run_env(postgres_url, smtp_server.port)
    runs = [start_run(env) for _ in range(4)]
    summaries = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
        summaries.append(json.loads(stdout)["data"])

    received = Counter(smtp_server.step_ids())
    assert sorted(received) == sorted(due)
    assert set(received.values()) == {1}
    assert sum(s["sent"] for s in summaries) == 1000
    assert sum(s["due"] for s in summaries) == 1000
    assert smtp_server.sessions <= 4  # one connection per run
    assert {s.status for s in store.list_steps(statuses=None, limit=None) if s.day == 0} == {"sent"}
    store.close()


def test_a_run_killed_mid_batch_sends_nothing_twice_and_leaves_review_work(
    store: Any, store_env: str, smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = seed_due(store, 300)
    run = start_run(run_env(store_env, smtp_server.port))

    def kill_at_the_120th(item: Any) -> None:
        if len(smtp_server.received) == 120:
            os.kill(run.pid, signal.SIGKILL)

    smtp_server.on_message = kill_at_the_120th
    run.communicate(timeout=120)
    assert run.returncode == -signal.SIGKILL
    smtp_server.on_message = None
    in_flight = {s.id for s in store.list_steps(statuses=("sending",), limit=None)}
    assert in_flight, "the kill should leave claimed steps without an outcome"

    # The next cron run sends what was never claimed, and leaves the in-flight steps alone.
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{smtp_server.port}")
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    runner = CliRunner()
    result = runner.invoke(app, ["dunning", "run", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["data"]["needs_review"] == 0

    # After the lease, the in-flight steps need a human; still nothing is resent.
    with freeze_time(utcnow() + timedelta(minutes=15)):
        result = runner.invoke(app, ["dunning", "run", "--json"], catch_exceptions=False)
    data = json.loads(result.stdout)["data"]
    assert (data["needs_review"], data["sent"]) == (len(in_flight), 0)
    assert result.exit_code == 4, "cron must hear that steps wait for a person"

    received = Counter(smtp_server.step_ids())
    assert max(received.values()) == 1, "a step was delivered twice"
    steps = {s.id: s.status for s in store.list_steps(statuses=None, limit=None) if s.day == 0}
    assert {steps[i] for i in in_flight} == {"needs_review"}
    assert {i for i, status in steps.items() if status == "sent"} == set(received) - in_flight
    assert set(steps) == set(due)
    assert set(steps.values()) == {"sent", "needs_review"}
