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
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
from cloudgreet_billing.errors import ExitCode
from tests.actions.conftest import ACCOUNT
from tests.cli.helpers import run
from tests.dunning.stripe_objects import (
    CUSTOMER_ID,
    INVOICE_ID,
    customer_object,
    event,
    invoice_object,
    ndjson,
)
from tests.stripe_fake import FakeStripe, Reply, card_declined, fake_stripe, stripe_env  # noqa: F401 (fixture)

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
    assert "BILLING_DATABASE_URL" not in os.environ


def failed_invoice_events(
    invoice_id: str = INVOICE_ID, customer_id: str = CUSTOMER_ID, suffix: str = "A"
) -> list[dict[str, Any]]:
    """A customer, then their invoice finalized and failed in the same second."""
    invoice = invoice_object(invoice_id=invoice_id, customer_id=customer_id, finalized_at=FAILED_AT)
    return [
        event(
            f"evt_1QpL8ILkdIwHu7ixCust000{suffix}",
            "customer.updated",
            customer_object(customer_id=customer_id),
            FAILED_AT,
        ),
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
    assert cli.sql(
        "SELECT status, amount_due FROM billing_invoices WHERE id = %s", (INVOICE_ID,)
    ) == [("open", 14900)]
    assert cli.sql("SELECT count(*) FROM billing_dunning_events")[0][0] == 6
    # The same events again change nothing.
    again = synced(cli)
    assert (again["events_applied"], again["alerts_opened"], again["dunning_scheduled"]) == (
        0,
        0,
        0,
    )
    assert cli.sql("SELECT count(*) FROM billing_alerts")[0][0] == 2
    assert cli.project.requests_to("^/rpc/billing_api_", "POST")


def test_alerts_list_show_ack_note_resolve(cli: Session) -> None:
    synced(cli)
    listed = cli.json("alerts", "list")
    assert sorted(a["invoice_id"] for a in listed) == sorted([INVOICE_ID, SECOND_INVOICE])
    first = next(a for a in listed if a["invoice_id"] == INVOICE_ID)
    assert (first["type"], first["status"], first["amount_due"], first["currency"]) == (
        "invoice_failed",
        "open",
        14900,
        "usd",
    )
    alert_id = str(first["id"])
    shown = cli.json("alerts", "show", alert_id)
    assert (shown["id"], shown["invoice"]["id"], shown["invoice"]["amount_due"]) == (
        first["id"],
        INVOICE_ID,
        14900,
    )
    assert [(s["day"], s["channel"], s["status"]) for s in shown["dunning_steps"]] == [
        (0, "email", "scheduled"),
        (1, "sms", "scheduled"),
        (3, "email", "scheduled"),
    ]
    human = cli("alerts", "list")
    assert INVOICE_ID in human.stdout and "$149.00" in human.stdout

    acked = cli.json("alerts", "ack", alert_id)
    assert acked["status"] == "acknowledged"
    again = cli.json("alerts", "ack", alert_id)
    assert again["changed"] is False
    cli.json("alerts", "note", alert_id, "called the practice manager")
    resolved = cli.json("alerts", "resolve", alert_id, "--reason", "paid by check", "--yes")
    assert resolved["status"] == "resolved"

    assert cli.sql(
        "SELECT status, resolution FROM billing_alerts WHERE id = %s", (int(alert_id),)
    ) == [("resolved", "paid by check")]
    assert cli.sql(
        "SELECT author, body FROM billing_alert_notes WHERE alert_id = %s", (int(alert_id),)
    ) == [("tester@ci", "called the practice manager")]
    shown = cli.json("alerts", "show", alert_id)
    text = json.dumps(shown)
    assert "called the practice manager" in text and "resolved" in text
    assert [a["invoice_id"] for a in cli.json("alerts", "list")] == [SECOND_INVOICE]
    assert len(cli.json("alerts", "list", "--status", "all")) == 2


def quarantined_event(event_id: str) -> dict[str, Any]:
    """A payment failure whose amount Stripe would never send: the sync quarantines it."""
    invoice = invoice_object(invoice_id="in_1QpLAaLkdIwHu7ixZz9Yx8Wv", finalized_at=FAILED_AT)
    invoice["amount_due"] = [1]
    return event(event_id, "invoice.payment_failed", invoice, FAILED_AT)


def test_quarantine_list_show_retry_dismiss(cli: Session) -> None:
    first, second = "evt_1QpLAbLkdIwHu7ixQuar0001", "evt_1QpLAbLkdIwHu7ixQuar0002"
    summary = cli.json(
        "sync",
        "--events-file",
        "-",
        input=ndjson(quarantined_event(first), quarantined_event(second)),
        code=ExitCode.NEEDS_ATTENTION,
    )
    assert summary["events_seen"] == 2
    listed = cli.json("quarantine", "list")
    assert sorted(row["event_id"] for row in listed) == [first, second]
    assert {row["status"] for row in listed} == {"quarantined"}
    by_event = {row["event_id"]: row for row in listed}
    shown = cli.json("quarantine", "show", first)
    assert shown["event_id"] == first
    assert "amount_due" in json.dumps(shown)
    retried = cli.json(
        "quarantine", "retry", str(by_event[first]["id"]), code=ExitCode.NEEDS_ATTENTION
    )
    assert retried["results"][0]["status"] == "quarantined"
    dismissed = cli.json(
        "quarantine", "dismiss", str(by_event[second]["id"]), "--reason", "fixture event", "--yes"
    )
    assert dismissed["status"] == "dismissed"
    assert cli.sql("SELECT event_id, status FROM billing_quarantined_events ORDER BY event_id") == [
        (first, "quarantined"),
        (second, "dismissed"),
    ]
    assert [row["event_id"] for row in cli.json("quarantine", "list")] == [first]


def undeliverable_events() -> list[dict[str, Any]]:
    """The second customer left no email and no phone anywhere."""
    invoice = invoice_object(
        invoice_id=SECOND_INVOICE,
        customer_id=SECOND_CUSTOMER,
        finalized_at=FAILED_AT,
        email=None,
        phone=None,
    )
    return [
        event(
            "evt_1QpL8ILkdIwHu7ixCust000B",
            "customer.updated",
            customer_object(customer_id=SECOND_CUSTOMER, email=None, phone=None),
            FAILED_AT,
        ),
        event("evt_1QpL8ILkdIwHu7ixFinal00B", "invoice.finalized", invoice, FAILED_AT),
        event("evt_1QpL8ILkdIwHu7ixFail000B", "invoice.payment_failed", invoice, FAILED_AT),
    ]


def steps(cli: Session, invoice_id: str) -> list[dict[str, Any]]:
    return sorted(cli.json("dunning", "list", "--invoice", invoice_id), key=lambda s: s["day"])


def test_dunning_run_list_preview_mark_unmark_requeue_pause_resume(
    cli: Session, tmp_path: Path
) -> None:
    cli.json(
        "sync",
        "--events-file",
        "-",
        input=ndjson(*failed_invoice_events(), *undeliverable_events()),
    )
    preview = cli("dunning", "preview", INVOICE_ID)
    assert "day 0 email" in preview.stdout
    assert "to billing@brightsmile-dental.example" in preview.stdout
    assert "We tried to collect $149.00" in preview.stdout
    planned = cli.json("dunning", "run", "--dry-run")
    assert (planned["due"], planned["sent"], planned["would_send"]) == (2, 0, 1)
    assert (
        cli.sql("SELECT count(*) FROM billing_dunning_events WHERE status = 'scheduled'")[0][0] == 6
    )

    ran = cli.json("dunning", "run", code=ExitCode.NEEDS_ATTENTION)
    assert (ran["due"], ran["sent"], ran["skipped"], ran["undeliverable"]) == (2, 1, 1, 1)
    [email] = list((tmp_path / "outbox").glob("*.eml"))
    assert "To: billing@brightsmile-dental.example" in email.read_text()
    day0, day1, day3 = steps(cli, INVOICE_ID)
    assert (day0["status"], day0["channel"], day0["attempts"]) == ("sent", "email", 1)
    assert day0["sent_at"].endswith("Z")
    assert (day1["status"], day3["status"]) == ("scheduled", "scheduled")
    skipped = steps(cli, SECOND_INVOICE)[0]
    assert skipped["status"] == "skipped"
    # A second run has nothing left to send.
    assert cli.json("dunning", "run")["due"] == 0
    pending = cli.json("dunning", "list")
    assert {s["status"] for s in pending} == {"scheduled"}
    assert day1["id"] in {s["id"] for s in pending}

    marked = cli.json(
        "dunning", "mark-sent", str(day1["id"]), "--reason", "phoned", "--force", "--yes"
    )
    assert marked["status"] == "sent"
    assert cli.sql("SELECT status FROM billing_dunning_events WHERE id = %s", (day1["id"],)) == [
        ("sent",)
    ]
    unmarked = cli.json("dunning", "unmark-sent", str(day1["id"]), "--yes")
    assert unmarked["status"] == "scheduled"
    assert cli.sql("SELECT status FROM billing_dunning_events WHERE id = %s", (day1["id"],)) == [
        ("scheduled",)
    ]
    requeued = cli.json("dunning", "requeue", str(skipped["id"]), "--yes")
    assert requeued["status"] == "scheduled"

    paused = cli.json("dunning", "pause", "--reason", "Stripe incident INC-42")
    assert (paused["paused"], paused["reason"], paused["actor"]) == (
        True,
        "Stripe incident INC-42",
        "tester@ci",
    )
    # Paused, the requeued step is due but nothing is sent.
    refused = cli.json("dunning", "run", code=ExitCode.UNAVAILABLE)
    assert "paused" in json.dumps(refused).lower()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    assert cli.json("dashboard")["paused"] is True
    resumed = cli.json("dunning", "resume")
    assert (resumed["paused"], resumed["was_paused"]) == (False, True)
    actions = {row[0] for row in cli.sql("SELECT action FROM billing_audit_log")}
    assert {"dunning.mark_sent", "dunning.unmark_sent", "dunning.requeue"} <= actions


def test_ledger_add_import_list(cli: Session, tmp_path: Path) -> None:
    added = cli.json(
        "ledger",
        "add",
        "--customer",
        CUSTOMER_ID,
        "--kind",
        "subscription",
        "--amount",
        "149.00",
        "--occurred-at",
        (NOW - timedelta(days=1)).isoformat(),
        "--invoice",
        INVOICE_ID,
        "--external-id",
        "sub-2026-12",
    )
    assert (added["amount"], added["currency"], added["kind"]) == (14900, "usd", "subscription")
    usage = tmp_path / "usage.csv"
    day = (NOW - timedelta(days=2)).date().isoformat()
    usage.write_text(
        "customer_id,kind,amount,currency,occurred_at,external_id\n"
        f"{CUSTOMER_ID},booking_fee,2.50,usd,{day},bk-1\n"
        f"{CUSTOMER_ID},booking_fee,2.50,usd,{day},bk-2\n"
        f"{CUSTOMER_ID},credit_adjustment,-1.25,usd,{day},cr-1\n"
    )
    dry = cli.json("ledger", "import", str(usage), "--dry-run")
    assert cli.sql("SELECT count(*) FROM billing_usage_ledger")[0][0] == 1
    assert (dry["dry_run"], dry["would_insert"], dry["inserted"]) == (True, 3, 0)
    imported = cli.json("ledger", "import", str(usage))
    assert imported["inserted"] == 3
    again = cli.json("ledger", "import", str(usage))
    assert again["inserted"] == 0
    listed = cli.json("ledger", "list", "--customer", CUSTOMER_ID)
    assert sorted(e["external_id"] for e in listed) == ["bk-1", "bk-2", "cr-1", "sub-2026-12"]
    assert sorted(e["amount"] for e in listed) == [-125, 250, 250, 14900]
    assert cli.sql("SELECT sum(amount) FROM billing_usage_ledger")[0][0] == 14900 + 500 - 125
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"customer_id,kind,amount,currency,occurred_at\n{CUSTOMER_ID},booking_fee,1.001,usd,{day}\n"
    )
    refused = cli("ledger", "import", str(bad), code=ExitCode.BAD_INPUT)
    assert "line 2" in refused.stderr
    assert cli.sql("SELECT count(*) FROM billing_usage_ledger")[0][0] == 4


def test_reconcile_offline_from_a_file_and_from_stripe(
    cli: Session,
    fake_stripe: FakeStripe,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    synced(cli)
    cli.json(
        "ledger",
        "add",
        "--customer",
        CUSTOMER_ID,
        "--kind",
        "subscription",
        "--amount",
        "149.00",
        "--occurred-at",
        FAILED_AT.isoformat(),
        "--external-id",
        "sub-1",
    )
    offline = cli.json("reconcile", "--offline", code=ExitCode.NEEDS_ATTENTION)
    rows = {(r["customer_id"], r["currency"]): r for r in offline["rows"]}
    assert rows[(CUSTOMER_ID, "usd")]["stripe_total"] == 14900
    assert rows[(CUSTOMER_ID, "usd")]["ledger_total"] == 14900
    assert rows[(CUSTOMER_ID, "usd")]["status"] == "match"
    assert rows[(SECOND_CUSTOMER, "usd")]["status"] == "mismatch"
    assert rows[(SECOND_CUSTOMER, "usd")]["ledger_total"] == 0
    assert offline["mismatches"] == 1
    assert len(offline["open_alerts"]) == 2

    saved = tmp_path / "invoices.json"
    saved.write_text(json.dumps([invoice_object(finalized_at=FAILED_AT)]))
    from_file = cli.json("reconcile", "--invoices-file", str(saved))
    assert [(r["customer_id"], r["status"]) for r in from_file["rows"]] == [(CUSTOMER_ID, "match")]

    stripe_env(monkeypatch, fake_stripe)
    fake_stripe.reply("GET", "/v1/account", ACCOUNT)
    fake_stripe.paginate("/v1/invoices", [invoice_object(finalized_at=FAILED_AT)])
    from_api = cli.json("reconcile")
    assert from_api["rows"] == from_file["rows"]
    assert fake_stripe.requests_to("GET", "/v1/invoices")


def test_dashboard_and_export_csv_of_every_dataset(cli: Session, tmp_path: Path) -> None:
    synced(cli)
    cli.json(
        "ledger",
        "add",
        "--customer",
        CUSTOMER_ID,
        "--kind",
        "booking_fee",
        "--amount",
        "2.50",
        "--occurred-at",
        FAILED_AT.isoformat(),
        "--external-id",
        "bk-1",
    )
    board = cli.json("dashboard")
    assert board["booking_fees_30d"] == {"usd": 250}
    assert board["open_alerts"] == {"invoice_failed": 2}
    assert board["paused"] is False
    assert board["last_sync_at"] is None or board["last_sync_at"].endswith("Z")
    assert board["dunning_due"] == 2
    human = cli("dashboard")
    assert "$2.50" in human.stdout

    def exported(dataset: str) -> list[dict[str, str]]:
        result = cli("export-csv", "--dataset", dataset, "--days", "7")
        return list(csv.DictReader(io.StringIO(result.stdout)))

    [entry] = exported("ledger")
    assert (entry["customer_id"], entry["amount_minor"], entry["amount_major"]) == (
        CUSTOMER_ID,
        "250",
        "2.50",
    )
    alerts = exported("alerts")
    assert sorted(a["invoice_id"] for a in alerts) == sorted([INVOICE_ID, SECOND_INVOICE])
    assert {a["amount_due_minor"] for a in alerts} == {"14900"}
    dunning = exported("dunning")
    # Steps due in the window: the day-0 emails (the later ones are due in the future).
    assert sorted((d["invoice_id"], d["day"], d["status"]) for d in dunning) == sorted(
        [(INVOICE_ID, "0", "scheduled"), (SECOND_INVOICE, "0", "scheduled")]
    )
    reconciliation = {r["customer_id"]: r for r in exported("reconciliation")}
    assert reconciliation[CUSTOMER_ID]["stripe_total_minor"] == "14900"
    assert reconciliation[CUSTOMER_ID]["ledger_total_minor"] == "250"  # the booking fee
    target = tmp_path / "ledger.csv"
    written = cli("export-csv", "-o", str(target))
    assert "wrote 1 ledger row" in written.stdout + written.stderr
    assert "2.50" in target.read_text()


def paid(invoice: dict[str, Any]) -> dict[str, Any]:
    return {
        **invoice,
        "status": "paid",
        "amount_paid": invoice["amount_due"],
        "amount_remaining": 0,
    }


def test_retry_resend_link_portal_dry_and_against_stripe(
    cli: Session,
    fake_stripe: FakeStripe,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced(cli)
    [alert] = [a for a in cli.json("alerts", "list") if a["invoice_id"] == INVOICE_ID]
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.example")
    # Dry runs need no Stripe key and send nothing.
    for command in (("retry", INVOICE_ID), ("resend-link", INVOICE_ID), ("portal", CUSTOMER_ID)):
        dry = cli(*command, "--dry-run")
        assert "POST" in dry.stdout and "/v1/" in dry.stdout, dry.stdout
    assert fake_stripe.requests == []

    stripe_env(monkeypatch, fake_stripe)
    fake_stripe.reply("GET", "/v1/account", ACCOUNT)
    open_invoice = invoice_object(finalized_at=FAILED_AT)
    fake_stripe.reply("GET", f"/v1/invoices/{INVOICE_ID}", open_invoice)
    fake_stripe.reply("POST", f"/v1/invoices/{INVOICE_ID}/send", open_invoice)
    sent = cli.json("resend-link", str(alert["id"]), "--yes")
    assert (sent["invoice_id"], sent["sent"]) == (INVOICE_ID, True)

    fake_stripe.reply(
        "POST",
        "/v1/billing_portal/sessions",
        lambda request: Reply(
            200,
            {
                "id": "bps_1QpLCcLkdIwHu7ixPortal01",
                "object": "billing_portal.session",
                "customer": CUSTOMER_ID,
                "return_url": request.form["return_url"],
                "url": "https://billing.stripe.com/p/session/test_YWNjdF8xUXBMOEhMa2RJd0h1N2l4",
                "livemode": False,
                "created": int(NOW.timestamp()),
            },
        ),
    )
    portal = cli.json("portal", CUSTOMER_ID)
    assert portal["url"].startswith("https://billing.stripe.com/p/session/")
    assert portal["return_url"] == "https://app.cloudgreet.example/admin/billing"

    fake_stripe.reply("POST", f"/v1/invoices/{INVOICE_ID}/pay", paid(open_invoice))
    retried = cli.json("retry", str(alert["id"]), "--yes")
    assert (retried["status"], retried["alert_status"], retried["amount_paid"]) == (
        "paid",
        "resolved",
        14900,
    )
    assert cli.sql("SELECT status FROM billing_invoices WHERE id = %s", (INVOICE_ID,)) == [
        ("paid",)
    ]
    assert {
        row[0]
        for row in cli.sql(
            "SELECT status FROM billing_dunning_events WHERE invoice_id = %s", (INVOICE_ID,)
        )
    } == {"canceled"}
    # The second customer's card is declined: exit 1, the code shown, the alert kept open.
    second = invoice_object(
        invoice_id=SECOND_INVOICE, customer_id=SECOND_CUSTOMER, finalized_at=FAILED_AT
    )
    fake_stripe.reply("GET", f"/v1/invoices/{SECOND_INVOICE}", second)
    fake_stripe.reply("POST", f"/v1/invoices/{SECOND_INVOICE}/pay", card_declined())
    declined = cli.json("retry", SECOND_INVOICE, "--yes", code=ExitCode.FAILED)
    assert (declined["code"], declined["decline_code"], declined["alert_status"]) == (
        "payment_declined",
        "insufficient_funds",
        "open",
    )
    assert cli.sql(
        "SELECT status, attempt_count FROM billing_alerts WHERE invoice_id = %s",
        (SECOND_INVOICE,),
    ) == [("open", 2)]
    assert ("retry", "declined") in cli.sql(
        "SELECT action, outcome FROM billing_audit_log WHERE target = %s", (SECOND_INVOICE,)
    )
    story = cli.sql(
        "SELECT action, outcome FROM billing_audit_log WHERE target IN (%s, %s) ORDER BY id",
        (INVOICE_ID, CUSTOMER_ID),
    )
    assert ("retry", "paid") in story and ("resend-link", "sent") in story
    assert ("portal", "created") in story


def test_incident_summary(cli: Session) -> None:
    synced(cli)
    [alert] = [a for a in cli.json("alerts", "list") if a["invoice_id"] == INVOICE_ID]
    cli.json("alerts", "ack", str(alert["id"]))
    cli.json("dunning", "pause", "--reason", "Stripe incident INC-42")
    summary = cli.json("incident", "summary", "--since", "3h")
    assert sorted(a["invoice_id"] for a in summary["failed"]) == sorted(
        [INVOICE_ID, SECOND_INVOICE]
    )
    assert summary["dunning_paused"]
    assert "INC-42" in summary["markdown"]
    assert len(summary["still_open"]) == 2
    human = cli("incident", "summary", "--since", "3h")
    assert INVOICE_ID in human.stdout


def test_sync_verify_against_stripe(
    cli: Session,
    fake_stripe: FakeStripe,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced(cli)
    stripe_env(monkeypatch, fake_stripe)
    fake_stripe.reply("GET", "/v1/account", ACCOUNT)
    first = invoice_object(finalized_at=FAILED_AT)
    second = invoice_object(
        invoice_id=SECOND_INVOICE, customer_id=SECOND_CUSTOMER, finalized_at=FAILED_AT
    )
    fake_stripe.paginate("/v1/invoices", [paid(first), second])
    fake_stripe.paginate("/v1/subscriptions", [])
    found = cli.json("sync", "--verify", code=ExitCode.NEEDS_ATTENTION)
    problems = {(d["id"], d["field"]) for d in found["differences"]}
    assert (INVOICE_ID, "status") in problems
    assert SECOND_INVOICE not in {d["id"] for d in found["differences"]}
    assert cli.sql("SELECT status FROM billing_invoices WHERE id = %s", (INVOICE_ID,)) == [
        ("open",)
    ]
    repaired = cli.json("sync", "--verify", "--repair", code=ExitCode.NEEDS_ATTENTION)
    assert repaired["repaired"] >= 1
    assert cli.sql("SELECT status FROM billing_invoices WHERE id = %s", (INVOICE_ID,)) == [
        ("paid",)
    ]


WEBHOOK_SECRET = "whsec_8fJ2kLqP0vXz3mN5bR7tY9wC1dE4gH6a"


def test_serve_applies_one_signed_webhook(cli: Session, tmp_path: Path) -> None:
    """The installed console script, as a process manager runs it, with the Supabase
    variables and the webhook secret only."""
    import httpx
    import stripe

    from tests.stripe_fake import unused_port

    port = unused_port()
    script = Path(sys.executable).parent / "cloudgreet-billing"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "SUPABASE_URL": cli.project.url,
        "SUPABASE_SECRET_KEY": cli.project.keys.secret,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BILLING_ACTOR": "webhook@ci",
    }
    server = subprocess.Popen(
        [str(script), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(base + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["ok"] is True
        failure = failed_invoice_events()[2]
        payload = json.dumps(failure)
        header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
        answer = httpx.post(
            base + "/api/internal/stripe/alerts",
            content=payload,
            timeout=30,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": True, "id": failure["id"], "status": "applied"}
        forged = httpx.post(
            base + "/api/internal/stripe/alerts",
            content=payload,
            timeout=30,
            headers={
                "Stripe-Signature": header.replace("v1=", "v1=0"),
                "Content-Type": "application/json",
            },
        )
        assert forged.status_code == 400
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    cli.outputs.append(out + err)
    assert cli.sql("SELECT type, status, invoice_id FROM billing_alerts") == [
        ("invoice_failed", "open", INVOICE_ID)
    ]
    assert cli.sql(
        "SELECT count(*) FROM billing_dunning_events WHERE invoice_id = %s", (INVOICE_ID,)
    ) == [(3,)]
    assert f"supabase {cli.project.url}" in err
    assert WEBHOOK_SECRET not in out + err


def test_exempt_exemptions_unexempt_report_and_the_recovery_export(
    cli: Session,
    fake_stripe: FakeStripe,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced(cli)
    exempt = cli.json("dunning", "exempt", SECOND_CUSTOMER, "--reason", "payment plan", "--yes")
    assert (exempt["customer_id"], exempt["reason"], exempt["actor"]) == (
        SECOND_CUSTOMER,
        "payment plan",
        "tester@ci",
    )
    assert exempt["already_exempt"] is False
    [listed] = cli.json("dunning", "exemptions")
    assert (listed["customer_id"], listed["reason"]) == (SECOND_CUSTOMER, "payment plan")
    assert cli.sql("SELECT customer_id, reason FROM billing_dunning_exemptions") == [
        (SECOND_CUSTOMER, "payment plan")
    ]
    ran = cli.json("dunning", "run")
    assert (ran["due"], ran["sent"], ran["skipped"], ran["exempt"]) == (2, 1, 1, 1)
    [day0] = [s for s in steps(cli, SECOND_INVOICE) if s["day"] == 0]
    assert day0["status"] == "skipped"
    assert day0["exempt_reason"] == "payment plan"
    unexempt = cli.json("dunning", "unexempt", SECOND_CUSTOMER, "--yes")
    assert (unexempt["exempt"], unexempt["was_exempt"], unexempt["scheduled"]) == (False, True, 2)
    assert unexempt["ended"]["reason"] == "payment plan"
    assert cli.json("dunning", "exemptions") == []
    assert cli.sql("SELECT count(*) FROM billing_dunning_exemptions") == [(0,)]
    typo = cli.json("dunning", "exempt", "cus_NoSuchCustomer01", "--reason", "x", "--yes", code=2)
    assert typo["code"] == "not_found"

    # The first invoice is paid after its day-0 email: dunning recovered it.
    stripe_env(monkeypatch, fake_stripe)
    fake_stripe.reply("GET", "/v1/account", ACCOUNT)
    open_invoice = invoice_object(finalized_at=FAILED_AT)
    fake_stripe.reply("GET", f"/v1/invoices/{INVOICE_ID}", open_invoice)
    fake_stripe.reply("POST", f"/v1/invoices/{INVOICE_ID}/pay", paid(open_invoice))
    cli.json("retry", INVOICE_ID, "--yes")
    report = cli.json("dunning", "report", "--days", "7")
    [total] = [r for r in report["rows"] if r["breakdown"] == "all" and r["scope"] == "dunned"]
    assert (total["currency"], total["failed_invoices"], total["failed_amount"]) == (
        "usd",
        2,
        29800,
    )
    assert (total["recovered_invoices"], total["recovered_amount"]) == (1, 14900)
    assert total["recovery_rate_pct"] == 50
    touches = {r["touch"]: r for r in report["rows"] if r["breakdown"] == "touch"}
    assert touches["manual retry"]["recovered_amount"] == 14900
    exported = cli("export-csv", "--dataset", "recovery", "--days", "7")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    [line] = [r for r in rows if r["breakdown"] == "all" and r["scope"] == "dunned"]
    assert (line["failed_minor"], line["recovered_minor"], line["recovered_major"]) == (
        "29800",
        "14900",
        "149.00",
    )


def test_sync_from_the_events_api_moves_the_cursor_and_backfill_lists_everything(
    cli: Session,
    fake_stripe: FakeStripe,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stripe_env(monkeypatch, fake_stripe)
    fake_stripe.reply("GET", "/v1/account", ACCOUNT)
    events = failed_invoice_events()
    fake_stripe.paginate("/v1/events", events)
    first = cli.json("sync")
    assert (first["events_applied"], first["alerts_opened"], first["dunning_scheduled"]) == (
        3,
        1,
        3,
    )
    assert first["cursor"] == FAILED_AT.strftime("%Y-%m-%dT%H:%M:%SZ")
    again = cli.json("sync")
    assert (again["events_applied"], again["alerts_opened"]) == (0, 0)
    assert fake_stripe.requests_to("GET", "/v1/events")[-1].query["created[gte]"] == str(
        int(FAILED_AT.timestamp())
    )
    assert cli.sql("SELECT count(*) FROM billing_stripe_events") == [(3,)]

    second = invoice_object(
        invoice_id=SECOND_INVOICE, customer_id=SECOND_CUSTOMER, finalized_at=FAILED_AT
    )
    fake_stripe.paginate("/v1/customers", [customer_object(customer_id=SECOND_CUSTOMER)])
    fake_stripe.paginate("/v1/invoices", [second, invoice_object(finalized_at=FAILED_AT)])
    fake_stripe.paginate("/v1/subscriptions", [])
    backfilled = cli.json("sync", "--backfill")
    assert (
        backfilled["customers_backfilled"],
        backfilled["invoices_backfilled"],
        backfilled["subscriptions_backfilled"],
    ) == (1, 2, 0)
    assert cli.sql("SELECT id, status FROM billing_invoices ORDER BY id") == sorted(
        [(INVOICE_ID, "open"), (SECOND_INVOICE, "open")]
    )
    assert cli.sql("SELECT count(*) FROM billing_customers") == [(2,)]


def test_demo_keeps_to_its_own_workspace(cli: Session, tmp_path: Path) -> None:
    """The Supabase variables set, the demo still touches nothing but its own folder."""
    shown = cli("demo", "--dir", str(tmp_path / "demo"))
    assert "demo" in shown.stdout.lower()
    assert cli.sql("SELECT count(*) FROM billing_alerts") == [(0,)]
    assert cli.sql("SELECT count(*) FROM billing_usage_ledger") == [(0,)]
