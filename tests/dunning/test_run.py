"""`dunning run` end to end through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from tests.dunning.conftest import T0, HttpCall, run_counts, schedule, seed_invoice, settle

runner = CliRunner()


def invoke(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def counts_of(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in ("run_id", "errors")}


@pytest.fixture
def outbox(store_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outbox"
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "file")
    monkeypatch.setenv("BILLING_SMS_BACKEND", "file")
    monkeypatch.setenv("BILLING_OUTBOX_DIR", str(folder))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    return folder


def emails(folder: Path) -> list[str]:
    return sorted(path.read_text() for path in folder.glob("*.eml")) if folder.exists() else []


def sms(folder: Path) -> list[dict[str, Any]]:
    if not folder.exists():
        return []
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.sms.json"))]


def statuses(store: Any, invoice_id: str = "in_1") -> dict[int, str]:
    return {step.day: step.status for step in store.list_steps(invoice_id=invoice_id, limit=None)}


def test_the_timeline_sends_day_0_email_day_1_sms_day_3_email(store: Any, outbox: Path) -> None:
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(minutes=5)):
        assert invoke("dunning", "run") == (0, {"data": {**run_counts(due=1, sent=1), **_ids()}})
    assert statuses(store) == {0: "sent", 1: "scheduled", 3: "scheduled"}
    [day0] = emails(outbox)
    assert "To: ada@example.com" in day0
    assert "https://invoice.stripe.com/i/test_1" in day0
    assert "$123.45" in day0

    with freeze_time(T0 + timedelta(hours=23)):
        code, body = invoke("dunning", "run")
    assert (code, counts_of(body["data"])) == (0, run_counts())

    with freeze_time(T0 + timedelta(days=1, minutes=1)):
        code, body = invoke("dunning", "run")
    assert (code, counts_of(body["data"])) == (0, run_counts(due=1, sent=1))
    [text] = sms(outbox)
    assert text["to"] == "+15550100"
    assert "$123.45" in text["body"] and "https://invoice.stripe.com/i/test_1" in text["body"]
    assert text["step_id"] == store.list_steps(invoice_id="in_1", limit=None)[1].id

    with freeze_time(T0 + timedelta(days=2, hours=23)):
        code, body = invoke("dunning", "run")
    assert counts_of(body["data"]) == run_counts()

    with freeze_time(T0 + timedelta(days=3, minutes=1)):
        code, body = invoke("dunning", "run")
    # The third completed step of an unpaid invoice escalates it.
    assert (code, counts_of(body["data"])) == (0, run_counts(due=1, sent=1, escalated=1))
    assert statuses(store) == {0: "sent", 1: "sent", 3: "sent"}
    assert len(emails(outbox)) == 2
    assert "Final reminder" in emails(outbox)[1] or "Final reminder" in emails(outbox)[0]


def _ids() -> dict[str, Any]:
    """Fields that vary per run, matched loosely."""
    return {"run_id": _Any(), "errors": []}


class _Any:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other != ""


def test_each_step_records_its_provider_message_id(store: Any, outbox: Path) -> None:
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(days=1, minutes=1)):
        invoke("dunning", "run")
    [sms_step] = [s for s in store.list_steps(invoice_id="in_1", limit=None) if s.status == "sent"]
    assert sms_step.provider_message_id is not None
    assert (outbox / sms_step.provider_message_id).is_file()


def test_catching_up_sends_only_the_latest_due_step(store: Any, outbox: Path) -> None:
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(days=4)):
        code, body = invoke("dunning", "run")
    assert code == 0
    assert counts_of(body["data"]) == run_counts(due=3, sent=1, skipped=2, escalated=1)
    steps = store.list_steps(invoice_id="in_1", limit=None)
    assert [(s.day, s.status, s.reason) for s in steps] == [
        (0, "skipped", "superseded"),
        (1, "skipped", "superseded"),
        (3, "sent", None),
    ]
    [only] = emails(outbox)
    assert "Final reminder" in only
    assert sms(outbox) == []


def test_a_step_without_contact_is_skipped_with_the_reason(store: Any, outbox: Path) -> None:
    seed_invoice(store, phone=None)
    schedule(store)
    with freeze_time(T0 + timedelta(days=1, minutes=1)):
        invoke("dunning", "run")  # day 0 email is superseded by day 1 sms
    sms_step = store.list_steps(invoice_id="in_1", limit=None)[1]
    assert (sms_step.status, sms_step.reason) == ("skipped", "customer cus_1 has no phone number")
    assert sms(outbox) == []


def test_settled_invoices_are_never_chased(store: Any, outbox: Path) -> None:
    seed_invoice(store)
    schedule(store)
    settle(store)
    with freeze_time(T0 + timedelta(days=5)):
        code, body = invoke("dunning", "run")
    assert code == 0
    assert counts_of(body["data"]) == run_counts()
    assert set(statuses(store).values()) == {"canceled"}
    assert emails(outbox) == []


def test_an_invoice_paid_without_the_cancel_seam_is_canceled_at_claim(
    store: Any, outbox: Path
) -> None:
    seed_invoice(store)
    schedule(store)
    seed_invoice(store, status="paid", now=T0 + timedelta(hours=1))
    with freeze_time(T0 + timedelta(hours=2)):
        code, body = invoke("dunning", "run")
    assert code == 0
    assert counts_of(body["data"]) == run_counts(due=1, canceled=1)
    assert emails(outbox) == []


def test_a_failed_send_is_recorded_and_exits_4(
    store: Any, store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{port}")
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(minutes=5)):
        code, body = invoke("dunning", "run")
    assert code == 4
    assert counts_of(body["data"]) == run_counts(due=1, failed=1)
    [error] = body["data"]["errors"]
    day0 = store.list_steps(invoice_id="in_1", limit=None)[0]
    assert error == {"step_id": day0.id, "error": day0.last_error}
    assert day0.status == "failed"
    assert f"cannot reach SMTP server 127.0.0.1:{port}" in day0.last_error
    assert day0.attempts == 1


def test_a_step_of_an_unmirrored_invoice_fails_instead_of_sending_blanks(
    store: Any, outbox: Path
) -> None:
    schedule(store)  # no mirror rows
    with freeze_time(T0 + timedelta(minutes=5)):
        code, body = invoke("dunning", "run")
    assert code == 4
    assert body["data"]["errors"][0]["error"] == (
        "invoice in_1 is not in the local mirror (run sync)"
    )
    assert emails(outbox) == []


def test_a_template_naming_a_missing_value_fails_the_step_not_the_inbox(
    store: Any, outbox: Path
) -> None:
    seed_invoice(store, pay_url=None)
    schedule(store)
    with freeze_time(T0 + timedelta(minutes=5)):
        code, body = invoke("dunning", "run")
    assert code == 4
    assert body["data"]["errors"][0]["error"] == "template 'day0_email': 'pay_url' is undefined"
    assert emails(outbox) == []


def test_dry_run_lists_each_message_it_would_send_and_changes_nothing(
    store: Any, outbox: Path
) -> None:
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(days=1, minutes=1)):
        code, body = invoke("dunning", "run", "--dry-run")
    assert code == 0
    data = body["data"]
    # The SMS it would send is would_send, never sent: nothing left.
    assert counts_of({k: v for k, v in data.items() if k != "planned"}) == run_counts(
        due=2, skipped=1, dry_run=True, would_send=1
    )
    day0, day1 = store.list_steps(invoice_id="in_1", limit=2)
    assert data["planned"] == [
        {
            "step_id": day0.id,
            "invoice_id": "in_1",
            "customer_id": "cus_1",
            "day": 0,
            "channel": "email",
            "template": "day0_email",
            "action": "skip",
            "recipient": None,
            "reason": "superseded",
        },
        {
            "step_id": day1.id,
            "invoice_id": "in_1",
            "customer_id": "cus_1",
            "day": 1,
            "channel": "sms",
            "template": "day1_sms",
            "action": "send",
            "recipient": "+15550100",
            "reason": None,
        },
    ]
    assert set(statuses(store).values()) == {"scheduled"}
    assert not outbox.exists()
    assert store.audit_trail("dunning") == []


def test_dry_run_prints_the_plan_as_rows(store: Any, outbox: Path) -> None:
    seed_invoice(store, "in_1QpL8HLkdIwHu7ixl4OzzPMv", "cus_RkS5AtmBK5hCeq")
    schedule(store, "in_1QpL8HLkdIwHu7ixl4OzzPMv", "cus_RkS5AtmBK5hCeq")
    seed_invoice(store, "in_1QpL8HLkdIwHu7ixNoC0ntct", "cus_RkS5NoContact", email=None, phone=None)
    schedule(store, "in_1QpL8HLkdIwHu7ixNoC0ntct", "cus_RkS5NoContact")
    with freeze_time(T0 + timedelta(minutes=5)):
        result = runner.invoke(app, ["dunning", "run", "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0
    # Not a terminal: a header line and one tab-separated row per due step, values whole.
    lines = result.stdout.splitlines()
    header = lines[0].split("\t")
    assert header == [
        "step",
        "invoice",
        "customer",
        "day",
        "channel",
        "action",
        "to",
        "template",
        "reason",
    ]
    plan = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:-1]]
    by_invoice = {row["invoice"]: row for row in plan}
    send = by_invoice["in_1QpL8HLkdIwHu7ixl4OzzPMv"]
    assert (send["customer"], send["day"], send["channel"], send["action"]) == (
        "cus_RkS5AtmBK5hCeq",
        "0",
        "email",
        "send",
    )
    assert (send["to"], send["template"], send["reason"]) == ("ada@example.com", "day0_email", "")
    nobody = by_invoice["in_1QpL8HLkdIwHu7ixNoC0ntct"]
    assert nobody["action"] == "undeliverable" and nobody["to"] == ""
    assert "has no email address or phone number" in nobody["reason"]
    assert lines[-1] == (
        "dry run, nothing sent or changed: 2 due; 1 would be sent, 1 skipped "
        "(1 undeliverable), 0 failed, 0 canceled; 0 would escalate"
    )
    assert emails(outbox) == []
    assert set(statuses(store, "in_1QpL8HLkdIwHu7ixNoC0ntct").values()) == {"scheduled"}
    _, alerts = invoke("alerts", "list", "--type", "dunning_undeliverable", "--status", "all")
    assert alerts == {"data": []}


def test_limit_caps_the_steps_handled(store: Any, outbox: Path) -> None:
    for n in range(5):
        seed_invoice(store, f"in_{n}", f"cus_{n}")
        schedule(store, f"in_{n}", f"cus_{n}")
    with freeze_time(T0 + timedelta(minutes=5)):
        _, body = invoke("dunning", "run", "--limit", "2")
        assert counts_of(body["data"]) == run_counts(due=2, sent=2)
        _, body = invoke("dunning", "run")
        assert counts_of(body["data"]) == run_counts(due=3, sent=3)
    assert len(emails(outbox)) == 5


def test_pause_stops_runs_with_exit_75_until_resume(store: Any, outbox: Path) -> None:
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(minutes=1)):
        code, body = invoke("dunning", "pause", "--reason", "Stripe outage")
    assert (code, body) == (
        0,
        {
            "data": {
                "paused": True,
                "reason": "Stripe outage",
                "actor": "tester@ci",
                "at": "2026-03-02T09:01:00Z",
                "already_paused": False,
                "also": [],
            }
        },
    )
    with freeze_time(T0 + timedelta(minutes=5)):
        code, body = invoke("dunning", "run")
    assert code == 75
    assert counts_of(body["data"]) == run_counts(paused=True)
    assert emails(outbox) == []
    assert statuses(store)[0] == "scheduled"

    with freeze_time(T0 + timedelta(minutes=6)):
        code, body = invoke("dunning", "resume")
    assert (code, body["data"]["was_paused"], body["data"]["actor"]) == (0, True, "tester@ci")
    with freeze_time(T0 + timedelta(minutes=7)):
        code, body = invoke("dunning", "run")
    assert (code, counts_of(body["data"])) == (0, run_counts(due=1, sent=1))
    trail = [(a.action, a.outcome, a.actor) for a in store.audit_trail("dunning")]
    assert ("dunning.pause", "paused", "tester@ci") in trail
    assert ("dunning.run", "paused", "tester@ci") in trail
    assert ("dunning.resume", "resumed", "tester@ci") in trail


def test_pause_needs_a_reason(store_env: str) -> None:
    result = runner.invoke(app, ["dunning", "pause"])
    assert result.exit_code == 2


def test_escalation_opens_one_alert_emails_finance_and_posts_to_slack(
    store: Any, outbox: Path, monkeypatch: pytest.MonkeyPatch, http_stub: Any
) -> None:
    def slack(call: HttpCall) -> tuple[int, str, bytes]:
        assert call.path == "/services/T000/B000/XXX"
        assert call.headers["Content-Type"] == "application/json"
        return 200, "text/plain", b"ok"

    hook = http_stub(slack)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{hook.url}/services/T000/B000/XXX")
    monkeypatch.setenv("FINANCE_LEAD_EMAIL", "finance@cloudgreet.test")
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(days=3, minutes=1)):
        code, body = invoke("dunning", "run")
    assert (code, counts_of(body["data"])) == (0, run_counts(due=3, sent=1, skipped=2, escalated=1))
    [post] = hook.calls
    text = post.json()["text"]
    assert text.startswith("[billing_ops] Dunning exhausted for invoice in_1 (customer cus_1)")
    assert "$123.45" in text
    finance = [mail for mail in emails(outbox) if "To: finance@cloudgreet.test" in mail]
    assert len(finance) == 1
    assert "Subject: Dunning exhausted: cus_1 still owes $123.45 on in_1" in finance[0]

    alerts = store._execute(
        "SELECT id, type, status, dedupe_key, invoice_id, amount_due, currency, details "
        "FROM billing_alerts"
    ).fetchall()
    assert len(alerts) == 1
    alert = alerts[0]
    assert tuple(alert[1:7]) == (
        "dunning_exhausted",
        "open",
        "dunning_exhausted:in_1",
        "in_1",
        12345,
        "usd",
    )
    assert store._json_value(alert[7])["notified"] == {
        "finance_lead_email": "sent",
        "slack": "sent",
    }
    # Once per invoice, ever: later runs, even after the alert is resolved, stay quiet.
    store._execute(
        "UPDATE billing_alerts SET status = 'resolved', resolved_at = updated_at WHERE id = ?",
        (alert[0],),
    )
    with freeze_time(T0 + timedelta(days=5)):
        code, body = invoke("dunning", "run")
    assert counts_of(body["data"]) == run_counts()
    assert len(hook.calls) == 1
    assert [a.action for a in store.audit_trail("in_1")] == ["dunning.escalate"]


def test_a_failed_escalation_notice_exits_4(
    store: Any, outbox: Path, monkeypatch: pytest.MonkeyPatch, http_stub: Any
) -> None:
    hook = http_stub(lambda call: (404, "text/plain", b"no_service"))
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{hook.url}/services/gone")
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(days=3, minutes=1)):
        code, body = invoke("dunning", "run")
    assert code == 4
    assert body["data"]["escalation_failures"] == 1
    assert body["data"]["errors"][0]["error"] == (
        "failed: the Slack webhook answered HTTP 404: no_service"
    )


def test_escalation_count_comes_from_billing_config(
    store: Any, outbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "billing.toml"
    config.write_text("[dunning]\nescalate_after = 1\n")
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(minutes=1)):
        _, body = invoke("dunning", "run")
    assert counts_of(body["data"]) == run_counts(due=1, sent=1, escalated=1)
