"""``demo`` walks the whole checklist on its own workspace, never on the user's setup."""

from __future__ import annotations

import csv
import json

from tests.cli.helpers import data, run


def test_demo_walks_the_checklist_in_its_own_workspace(tmp_path, monkeypatch):
    # A real-looking environment that the demo must ignore.
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://prod:secret@127.0.0.1:1/prod")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_0123456789abcdefghij")
    workspace = tmp_path / "demo"
    report = data(run("demo", "--dir", str(workspace), "--json"))

    codes = {step["command"].split(" ", 3)[3]: step["exit_code"] for step in report["steps"]}
    assert codes["db migrate"] == 0
    assert codes["reconcile --offline"] == 4, "the planted variance must be flagged"
    assert all(code == 0 for command, code in codes.items() if command != "reconcile --offline")

    emails = sorted((workspace / "outbox").glob("*.eml"))
    assert len(emails) == 3, "a day-3 email, a day-0 email and the finance-lead escalation"
    to_customers = [p.read_text() for p in emails if "-email-step" in p.name]
    assert len(to_customers) == 2
    assert all("https://invoice.stripe.com/i/demo/in_Demo" in body for body in to_customers)
    assert any("finance-lead@cloudgreet.example" in p.read_text() for p in emails)

    with (workspace / "ledger-last-7-days.csv").open(newline="") as export:
        rows = list(csv.DictReader(export))
    assert rows and {row["currency"] for row in rows} <= {"usd", "eur"}

    env_file = str(workspace / ".env")
    monkeypatch.delenv("BILLING_DATABASE_URL")
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    alerts = data(run("--env-file", env_file, "alerts", "list", "--json"))
    assert sorted(alert["type"] for alert in alerts) == [
        "dunning_exhausted",
        "invoice_failed",
        "invoice_failed",
        "payment_action_required",
        "threshold_exceeded",
    ]
    board = data(run("--env-file", env_file, "dashboard", "--json"))
    assert board["mrr"] == {"usd": 75037, "eur": 19900}
    assert json.loads(json.dumps(board["open_alerts"]))["invoice_failed"] == 2
