"""Operator commands: list, preview, mark-sent, requeue. Each writes an audit row."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from tests.dunning.conftest import T0, schedule, seed_invoice, settle

runner = CliRunner()


def invoke(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def test_list_shows_unfinished_steps_by_default_and_all_for_one_invoice(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    seed_invoice(store, "in_2", "cus_2")
    schedule(store, "in_2", "cus_2")
    settle(store, "in_2", "cus_2")
    code, body = invoke("dunning", "list")
    assert code == 0
    assert [(s["invoice_id"], s["day"], s["status"]) for s in body["data"]] == [
        ("in_1", 0, "scheduled"),
        ("in_1", 1, "scheduled"),
        ("in_1", 3, "scheduled"),
    ]
    first = body["data"][0]
    assert first == {
        "id": first["id"],
        "invoice_id": "in_1",
        "customer_id": "cus_1",
        "alert_id": None,
        "day": 0,
        "channel": "email",
        "status": "scheduled",
        "due_at": "2026-03-02T09:00:00Z",
        "sent_at": None,
        "attempts": 0,
        "last_error": None,
        "reason": None,
        "provider_message_id": None,
        "may_have_been_sent": None,
        "exempt_reason": None,
        "exempt_by": None,
    }
    _, body = invoke("dunning", "list", "--invoice", "in_2")
    assert [s["status"] for s in body["data"]] == ["canceled"] * 3
    _, body = invoke("dunning", "list", "--status", "canceled", "--limit", "2")
    assert len(body["data"]) == 2
    _, body = invoke("dunning", "list", "--status", "all")
    assert len(body["data"]) == 6
    assert [a.action for a in store.audit_trail("in_2")] == ["dunning.list"]


def test_list_rejects_an_unknown_status(store: Any) -> None:
    code, body = invoke("dunning", "list", "--status", "lost")
    assert code == 2
    assert body["error"]["code"] == "bad_input"


def test_preview_renders_every_message_of_an_invoice(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    code, body = invoke("dunning", "preview", "in_1")
    assert code == 0
    messages = body["data"]["messages"]
    assert [(m["day"], m["channel"], m["to"]) for m in messages] == [
        (0, "email", "ada@example.com"),
        (1, "sms", "+15550100"),
        (3, "email", "ada@example.com"),
    ]
    assert messages[0]["subject"] == (
        "Payment failed for invoice CG-0001 — please update your payment method"
    )
    assert "We tried to collect $123.45" in messages[0]["body"]
    assert messages[1]["body"] == (
        "CloudGreet: a friendly reminder that $123.45 is due on invoice CG-0001. "
        "Pay securely here: https://invoice.stripe.com/i/test_1"
    )
    assert [(a.action, a.outcome) for a in store.audit_trail("in_1")] == [
        ("dunning.preview", "rendered")
    ]


def test_preview_of_an_unscheduled_invoice_renders_the_timeline(store: Any) -> None:
    seed_invoice(store)
    code, body = invoke("dunning", "preview", "in_1")
    assert code == 0
    assert [(m["step_id"], m["status"]) for m in body["data"]["messages"]] == [
        (None, "planned")
    ] * 3


def test_preview_fails_on_a_missing_value(store: Any) -> None:
    seed_invoice(store, pay_url=None)
    schedule(store)
    code, body = invoke("dunning", "preview", "in_1")
    assert code == 2
    assert body["error"]["code"] == "template_error"
    assert body["error"]["errors"] == [
        "day 0 email (day0_email): template 'day0_email': 'pay_url' is undefined",
        "day 1 sms (day1_sms): template 'day1_sms': 'pay_url' is undefined",
        "day 3 email (day3_email): template 'day3_email': 'pay_url' is undefined",
    ]


def test_preview_uses_operations_templates_and_timeline(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates = tmp_path / "copy"
    templates.mkdir()
    (templates / "nudge.txt").write_text("Subject: {{ amount_due }} due\n\nHello {{ nickname }}\n")
    config = tmp_path / "billing.toml"
    config.write_text(
        '[dunning]\ntemplates_dir = "copy"\n\n'
        '[[dunning.steps]]\nday = 2\nchannel = "email"\ntemplate = "nudge"\n'
    )
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    seed_invoice(store)
    code, body = invoke("dunning", "preview", "in_1")
    assert code == 2
    assert body["error"]["errors"] == [
        "day 2 email (nudge): template 'nudge': 'nickname' is undefined"
    ]
    (templates / "nudge.txt").write_text(
        "Subject: {{ amount_due }} due\n\nHello {{ customer_name }}\n"
    )
    code, body = invoke("dunning", "preview", "in_1")
    assert code == 0
    [message] = body["data"]["messages"]
    assert (message["day"], message["subject"], message["body"]) == (
        2,
        "$123.45 due",
        "Hello Ada Lovelace\n",
    )


def test_preview_of_an_unknown_invoice_is_not_found(store: Any) -> None:
    code, body = invoke("dunning", "preview", "in_nope")
    assert (code, body["error"]["code"]) == (2, "not_found")


def _needs_review(store: Any) -> int:
    [claimed, *_] = store.claim_due_steps(
        now=T0, lease_until=T0 + timedelta(minutes=1), run_id="dead", limit=1
    )
    store.expire_leases(T0 + timedelta(minutes=2))
    return claimed.step.id


def test_mark_sent_records_a_hand_checked_step(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    step_id = _needs_review(store)
    with freeze_time(T0 + timedelta(hours=1)):
        code, body = invoke("dunning", "mark-sent", str(step_id), "--yes")
    assert code == 0
    assert (body["data"]["status"], body["data"]["sent_at"]) == ("sent", "2026-03-02T10:00:00Z")
    assert body["data"]["reason"] == "marked sent by tester@ci"
    code, body = invoke("dunning", "mark-sent", str(step_id), "--yes")
    assert (code, body["error"]["code"]) == (2, "invalid_state")
    trail = [(a.action, a.outcome, a.actor) for a in store.audit_trail(f"dunning_step:{step_id}")]
    assert trail == [
        ("dunning.mark_sent", "sent", "tester@ci"),
        ("dunning.mark_sent", "refused", "tester@ci"),
    ]


def test_requeue_schedules_a_step_again(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    step_id = _needs_review(store)
    code, body = invoke("dunning", "requeue", str(step_id), "--yes")
    assert (code, body["data"]["status"], body["data"]["reason"]) == (0, "scheduled", None)
    code, body = invoke("dunning", "requeue", str(step_id), "--yes")
    assert (code, body["error"]["code"]) == (2, "invalid_state")
    assert [a.outcome for a in store.audit_trail(f"dunning_step:{step_id}")] == [
        "scheduled",
        "refused",
    ]


def test_requeue_refuses_steps_of_a_paid_invoice(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    step_id = _needs_review(store)
    settle(store)
    code, body = invoke("dunning", "requeue", str(step_id), "--yes")
    assert code == 2
    assert body["error"]["message"] == "invoice in_1 is paid; its steps are not sent again"


def test_unknown_step_ids_are_not_found(store: Any) -> None:
    code, body = invoke("dunning", "requeue", "999", "--yes")
    assert (code, body["error"]["code"]) == (2, "not_found")


def test_human_output_goes_to_stdout_and_the_store_line_to_stderr(store: Any) -> None:
    seed_invoice(store)
    schedule(store)
    result = runner.invoke(app, ["dunning", "list"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "in_1" in result.stdout
    assert "store:" in result.stderr
