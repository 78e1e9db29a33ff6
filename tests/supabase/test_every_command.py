"""Every command of the contract (/work/shared/CLI.md) with only the Supabase variables set.

Issue 14's "done when": with ``SUPABASE_URL`` and a secret key, and no
``BILLING_DATABASE_URL``, every command works through the Supabase REST store. Each test
drives commands as a user does (the CLI in-process, the console script for ``serve``),
against the PostgREST stand-in on a real PostgreSQL with the schema applied by the owner;
asserts what the user sees (exit code, key output, JSON fields) and what the store holds
afterwards (read as the owner, outside the API); and that no key of the project was ever
printed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
from cloudgreet_billing.errors import ExitCode
from tests.cli.helpers import run
from tests.dunning.stripe_objects import (
    CUSTOMER_ID,
    INVOICE_ID,
    customer_object,
    event,
    invoice_object,
    ndjson,
)

pytestmark = pytest.mark.postgres

#: Real now, not frozen: the stand-in and the Supabase client keep their own clocks.
NOW = datetime.now(UTC).replace(microsecond=0)
#: The invoice failed two hours ago, so its day-0 email is due and its day-1 SMS is not.
FAILED_AT = NOW - timedelta(hours=2)
SECOND_INVOICE = "in_1QpL9bLkdIwHu7ixQw3RtYu8"
SECOND_CUSTOMER = "cus_RkS6BuncL6iDfr"


class Session:
    """The CLI run as a user with only the Supabase variables, every output kept for the
    no-key check."""

    def __init__(self, project: Any) -> None:
        self.project = project
        self.outputs: list[str] = []

    def __call__(self, *args: str, input: str | None = None, code: int = 0) -> Any:
        result = run(*args, input=input)
        self.outputs.append(result.stdout + result.stderr)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        return result

    def json(self, *args: str, input: str | None = None, code: int = 0) -> Any:
        result = self(*args, "--json", input=input, code=code)
        body = json.loads(result.stdout)
        return body["data"] if "data" in body else body["error"]

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.project.sql(query, params)

    def assert_no_key(self) -> None:
        keys = self.project.keys
        secrets = (keys.secret, keys.publishable, keys.service_role, keys.anon, keys.jwt_secret)
        for shown in self.outputs:
            for key in secrets:
                assert key not in shown
                assert key.rsplit(".", 1)[-1] not in shown


@pytest.fixture
def cli(supabase_store: Any, postgrest: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Only the project URL and its secret key (the autouse ``isolated_env`` removed every
    other variable), messages written to an outbox folder."""
    monkeypatch.setenv("SUPABASE_URL", postgrest.url)
    monkeypatch.setenv("SUPABASE_SECRET_KEY", postgrest.keys.secret)
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "file")
    monkeypatch.setenv("BILLING_SMS_BACKEND", "file")
    monkeypatch.setenv("BILLING_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.example")
    session = Session(postgrest)
    yield session
    session.assert_no_key()
    assert "BILLING_DATABASE_URL" not in __import__("os").environ


def failed_invoice_events(
    invoice_id: str = INVOICE_ID, customer_id: str = CUSTOMER_ID, suffix: str = "A"
) -> list[dict[str, Any]]:
    """A customer, then their invoice finalized and failed in the same second."""
    invoice = invoice_object(invoice_id=invoice_id, customer_id=customer_id, finalized_at=FAILED_AT)
    return [
        event(f"evt_1QpL8ILkdIwHu7ixCust000{suffix}", "customer.updated",
              customer_object(customer_id=customer_id), FAILED_AT),
        event(f"evt_1QpL8ILkdIwHu7ixFinal00{suffix}", "invoice.finalized", invoice, FAILED_AT),
        event(f"evt_1QpL8ILkdIwHu7ixFail000{suffix}", "invoice.payment_failed", invoice, FAILED_AT),
    ]


def synced(cli: Session) -> dict[str, Any]:
    events = failed_invoice_events() + failed_invoice_events(SECOND_INVOICE, SECOND_CUSTOMER, "B")
    return cli.json("sync", "--events-file", "-", input=ndjson(*events))


def test_db_status_migrate_and_doctor(cli: Session) -> None:
    status = cli.json("db", "status")
    assert status["backend"] == "supabase"
    assert status["location"] == cli.project.url
    assert status["schema_version"] == LATEST_SCHEMA_VERSION
    human = cli("db", "status")
    assert f"store: supabase {cli.project.url}" in human.stderr
    migrated = cli("db", "migrate")
    assert f"schema is up to date (version {LATEST_SCHEMA_VERSION})" in migrated.stdout
    doctor = cli.json("doctor")
    checks = {check["name"]: check for check in doctor["checks"]}
    assert checks["store"]["status"] == "ok"
    assert checks["store"]["detail"].startswith(f"supabase {cli.project.url}")
    assert all(check["status"] != "fail" for check in doctor["checks"]), doctor


def test_sync_from_a_file_mirrors_opens_alerts_and_schedules_dunning(cli: Session) -> None:
    summary = synced(cli)
    assert summary["events_seen"] == 6
    assert summary["events_applied"] == 6
    assert summary["alerts_opened"] == 2
    assert summary["dunning_scheduled"] == 6
    assert cli.sql("SELECT status, amount_due FROM billing_invoices WHERE id = %s", (INVOICE_ID,)) == [
        ("open", 14900)
    ]
    assert cli.sql("SELECT count(*) FROM billing_dunning_events")[0][0] == 6
    # The same events again change nothing.
    again = synced(cli)
    assert (again["events_applied"], again["alerts_opened"], again["dunning_scheduled"]) == (0, 0, 0)
    assert cli.sql("SELECT count(*) FROM billing_alerts")[0][0] == 2
    assert cli.project.requests_to("^/rpc/billing_api_", "POST")


def test_alerts_list_show_ack_note_resolve(cli: Session) -> None:
    synced(cli)
    listed = cli.json("alerts", "list")
    assert sorted(a["invoice_id"] for a in listed) == sorted([INVOICE_ID, SECOND_INVOICE])
    first = next(a for a in listed if a["invoice_id"] == INVOICE_ID)
    assert (first["type"], first["status"], first["amount_due"], first["currency"]) == (
        "invoice_failed", "open", 14900, "usd"
    )
    alert_id = str(first["id"])
    shown = cli.json("alerts", "show", alert_id)
    assert shown["alert"]["id"] == first["id"] if "alert" in shown else shown["id"] == first["id"]
    human = cli("alerts", "list")
    assert INVOICE_ID in human.stdout and "$149.00" in human.stdout

    acked = cli.json("alerts", "ack", alert_id)
    assert acked["status"] == "acknowledged"
    again = cli.json("alerts", "ack", alert_id)
    assert again["changed"] is False
    cli.json("alerts", "note", alert_id, "called the practice manager")
    resolved = cli.json("alerts", "resolve", alert_id, "--reason", "paid by check", "--yes")
    assert resolved["status"] == "resolved"

    assert cli.sql("SELECT status, resolution FROM billing_alerts WHERE id = %s", (int(alert_id),)) == [
        ("resolved", "paid by check")
    ]
    assert cli.sql("SELECT author, body FROM billing_alert_notes WHERE alert_id = %s", (int(alert_id),)) == [
        ("tester@ci", "called the practice manager")
    ]
    shown = cli.json("alerts", "show", alert_id)
    text = json.dumps(shown)
    assert "called the practice manager" in text and "resolved" in text
    assert [a["invoice_id"] for a in cli.json("alerts", "list")] == [SECOND_INVOICE]
    assert len(cli.json("alerts", "list", "--status", "all")) == 2
