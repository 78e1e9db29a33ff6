"""``incident summary``: the playbook's write-up, from the audit log and the alert history.

The history is built through the same store calls and commands an incident produces (an
alert per failed invoice, an operator's ack and resolve, a pause), on SQLite and
PostgreSQL, and the summary is read as the operator and Slack would read it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.domain.alerts import AlertDraft, invoice_alert_key
from cloudgreet_billing.domain.incident import parse_since
from cloudgreet_billing.errors import BadInput
from tests.cli.helpers import data, run
from tests.dunning.conftest import HttpCall, HttpStub

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
# Ids of Stripe's real length, so a cut id would show.
FAILED_NOW = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
FAILED_EARLIER = "in_1QmZ2KLkdIwHu7ixA9bC3dEf"
PAID_IN_WINDOW = "in_1QpM0aLkdIwHu7ixQ1w2E3r4"
CUSTOMER = "cus_Qf3kZ8aB1cD2eF3gH4iJ5k"


def _failed(store: Any, invoice_id: str, at: datetime, failure: str, amount: int) -> int:
    raised = store.raise_alert(
        AlertDraft(
            type="invoice_failed",
            dedupe_key=invoice_alert_key("invoice_failed", invoice_id),
            customer_id=CUSTOMER,
            invoice_id=invoice_id,
            amount_due=amount,
            currency="usd",
            stripe_event_id="evt_1QpL8ILkdIwHu7ixZx9Yy8Ww",
            attempt_count=2,
            last_failure=failure,
        ),
        actor="stripe-webhook",
        now=at,
    )
    return int(raised.alert.id)


@pytest.fixture
def incident(store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Two hours of an outage: two failures (one from yesterday, still open), a manual
    retry that was paid, the paid invoice's alert resolved, dunning paused."""
    _failed(store, FAILED_EARLIER, NOW - timedelta(days=1), "Your card was declined.", 4900)
    _failed(
        store, FAILED_NOW, NOW - timedelta(minutes=90), "Your card has insufficient funds.", 149000
    )
    paid = _failed(store, PAID_IN_WINDOW, NOW - timedelta(minutes=80), "Card declined.", 2500)
    store.append_audit(
        AuditDraft(
            actor="dana",
            action="retry",
            target=PAID_IN_WINDOW,
            outcome="paid",
            idempotency_key="retry:in_1QpM0aLkdIwHu7ixQ1w2E3r4:2",
            details={"amount": 2500, "currency": "usd"},
        ),
        NOW - timedelta(minutes=50),
    )
    store.resolve_alert(
        paid, resolution="paid by a manual retry", actor="dana", now=NOW - timedelta(minutes=50)
    )
    store.append_audit(
        AuditDraft("cron", "dunning.run", "dunning", "paused"), NOW - timedelta(minutes=20)
    )
    monkeypatch.setenv("BILLING_ACTOR", "dana")
    with freeze_time(NOW - timedelta(minutes=30)):
        paused = run("dunning", "pause", "--reason", "INC-42 Stripe API outage", "--json")
        assert paused.exit_code == 0, paused.stderr
    yield store


def _summary(*args: str) -> dict[str, Any]:
    with freeze_time(NOW):
        result: dict[str, Any] = data(run("incident", "summary", *args, "--json"))
    return result


def test_summary_tells_what_failed_what_was_done_and_what_is_open(incident: Any) -> None:
    summary = _summary("--since", "2h")
    assert [a["invoice_id"] for a in summary["failed"]] == [FAILED_NOW, PAID_IN_WINDOW]
    assert [a["invoice_id"] for a in summary["still_open"]] == [FAILED_EARLIER, FAILED_NOW]
    assert [a["invoice_id"] for a in summary["resolved"]] == [PAID_IN_WINDOW]
    told = [(a["actor"], a["action"], a["outcome"]) for a in summary["actions"]]
    assert ("dana", "retry", "paid") in told
    assert ("dana", "dunning.pause", "paused") in told
    # The machine's own lines are counted, not listed among the operators' actions.
    assert summary["routine"]["dunning.run"] == 1
    assert all(a["action"] != "dunning.run" for a in summary["actions"])
    assert summary["dunning_paused"] is True
    assert summary["dunning_pause"]["reason"] == "INC-42 Stripe API outage"
    steps = summary["next_steps"]
    assert "dunning resume" in steps[0]
    assert any(step.startswith("2 failed invoices still open") for step in steps)

    markdown = summary["markdown"]
    assert markdown.startswith("# Billing incident summary\n")
    assert "Window: 2026-12-03 07:00 UTC to 2026-12-03 09:00 UTC" in markdown
    for invoice in (FAILED_NOW, FAILED_EARLIER, PAID_IN_WINDOW):
        assert f"`{invoice}`" in markdown
    assert "$1,490.00" in markdown and "$25.00" in markdown
    assert "`dana` `retry` `in_1QpM0aLkdIwHu7ixQ1w2E3r4`: **paid**, $25.00" in markdown
    assert "INC-42 Stripe API outage" in markdown


def test_a_shorter_window_leaves_earlier_actions_out(incident: Any) -> None:
    summary = _summary("--since", "40m")
    assert summary["failed"] == []
    assert [a["action"] for a in summary["actions"]] == ["dunning.pause"]
    # What is open now is open whatever the window.
    assert len(summary["still_open"]) == 2


def test_human_output_is_the_markdown_itself(incident: Any) -> None:
    with freeze_time(NOW):
        result = run("incident", "summary", "--since", "2h")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# Billing incident summary\n")
    assert "## Next steps\n1. Dunning is paused" in result.stdout


def test_nothing_open_says_close_the_incident(store: Any) -> None:
    summary = _summary("--since", "1h")
    assert summary["next_steps"] == ["Nothing is left open: close the incident."]
    assert "No new alerts in the window." in summary["markdown"]


def test_text_from_stripe_cannot_ping_the_channel_or_break_the_list(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = "<!channel> *urgent* [click](http://evil.example)\n- injected line"
    _failed(store, FAILED_NOW, NOW - timedelta(minutes=5), hostile, 100)
    calls: list[HttpCall] = []
    slack = HttpStub(lambda call: (calls.append(call), (200, "text/plain", b"ok"))[1])
    try:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T0/B0/x")
        summary = _summary("--since", "1h", "--post")
    finally:
        slack.close()
    markdown = summary["markdown"]
    assert r"\<\!channel\> \*urgent\* \[click\](http://evil.example) - injected line" in markdown
    assert "\n- injected line" not in markdown
    text = calls[0].json()["text"]
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; *urgent* [click](http://evil.example) - injected line" in text


def test_post_tags_billing_ops_and_cuts_long_lists(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(20):
        _failed(
            store,
            f"in_1QpL8HLkdIwHu7ixlz{n:06d}",
            NOW - timedelta(minutes=60 - n),
            "declined",
            1000,
        )
    calls: list[HttpCall] = []
    slack = HttpStub(lambda call: (calls.append(call), (200, "text/plain", b"ok"))[1])
    try:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T0/B0/x")
        monkeypatch.setenv("SLACK_BILLING_OPS_HANDLE", "<!subteam^S0123ABCD|billing_ops>")
        with freeze_time(NOW):
            result = run("incident", "summary", "--since", "2h", "--post")
    finally:
        slack.close()
    assert result.exit_code == 0, result.stderr
    assert "posted to Slack for <!subteam^S0123ABCD|billing_ops>" in result.stderr
    [call] = calls
    assert call.path == "/services/T0/B0/x"
    assert call.headers["Content-Type"] == "application/json"
    text = call.json()["text"]
    assert text.startswith(
        "[billing_ops] <!subteam^S0123ABCD|billing_ops> *Billing incident summary*"
    )
    assert "- … and 5 more" in text
    assert text.count("in_1QpL8HLkdIwHu7ixlz") == 30  # 15 under "What failed", 15 "Still open"
    # The document itself is never cut.
    assert result.stdout.count("in_1QpL8HLkdIwHu7ixlz") == 40


def test_post_needs_the_webhook(store: Any) -> None:
    with freeze_time(NOW):
        result = run("incident", "summary", "--post")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: SLACK_WEBHOOK_URL is not set (set SLACK_WEBHOOK_URL")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("status", "body", "exit_code"),
    [(503, b"service unavailable", 75), (429, b"rate_limited", 75), (404, b"no_service", 1)],
)
def test_slack_refusals_say_why_with_the_contracts_exit_code(
    store: Any, monkeypatch: pytest.MonkeyPatch, status: int, body: bytes, exit_code: int
) -> None:
    slack = HttpStub(lambda call: (status, "text/plain", body))
    try:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T0/B0/x")
        with freeze_time(NOW):
            result = run("incident", "summary", "--post", "--json")
    finally:
        slack.close()
    assert result.exit_code == exit_code
    error = json.loads(result.stdout)["error"]
    assert error["message"] == (
        f"the summary was not posted: the Slack webhook answered HTTP {status}: {body.decode()}"
    )
    assert "Traceback" not in result.stderr


def test_a_handle_that_is_not_a_mention_is_refused(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BILLING_OPS_HANDLE", "billing ops <!everyone>")
    result = run("incident", "summary")
    assert result.exit_code == 2
    assert "SLACK_BILLING_OPS_HANDLE" in result.stderr and "not a Slack mention" in result.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("90m", NOW - timedelta(minutes=90)),
        ("3d", NOW - timedelta(days=3)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2026-12-03T06:30:00Z", datetime(2026, 12, 3, 6, 30, tzinfo=UTC)),
    ],
)
def test_since_takes_a_look_back_or_a_time(raw: str, expected: datetime) -> None:
    assert parse_since(raw, NOW) == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("yesterday", "neither a look-back nor a time"),
        ("0m", "before the window's end"),
        ("2026-12-03T09:30:00Z", "before the window's end"),
        ("32d", "more than 31 days"),
        ("9" * 100_000, "neither a look-back nor a time"),
    ],
)
def test_bad_since_is_refused_in_one_short_line(raw: str, says: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse_since(raw, NOW)
    assert says in refused.value.message
    assert len(refused.value.message) < 200
