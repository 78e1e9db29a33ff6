"""State changes that reach customers or the audit trail are deliberate (issue 12).

``dunning mark-sent``, ``unmark-sent``, ``requeue``, ``alerts resolve`` and a second
``dunning pause`` ask on a terminal and need ``--yes`` elsewhere (exit 3); a step not yet
due needs ``--force``; a manual mark-sent can be undone; a second pause keeps the first;
a second ack says so. On SQLite and PostgreSQL, through the CLI as an operator types it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner, Result

from cloudgreet_billing.cli import app
from cloudgreet_billing.domain.alerts import AlertDraft, invoice_alert_key
from cloudgreet_billing.domain.dunning import PAUSE_SETTING
from tests.dunning.conftest import T0, schedule, seed_invoice

LATER = T0 + timedelta(hours=1)


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def body(result: Result) -> Any:
    return json.loads(result.stdout)


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the payment actions' tests do: a person at a TTY answers the prompt."""
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)


def step_of(store: Any, day: int) -> Any:
    [step] = [s for s in store.list_steps(invoice_id="in_1", limit=None) if s.day == day]
    return step


def needs_review(store: Any) -> int:
    """Day 0's step, left mid-send by a run that died: it waits for a person."""
    [claimed, *_] = store.claim_due_steps(
        now=T0, lease_until=T0 + timedelta(minutes=1), run_id="dead", limit=1
    )
    store.expire_leases(T0 + timedelta(minutes=2))
    return int(claimed.step.id)


def trail(store: Any, target: str) -> list[tuple[str, str, str]]:
    return [(a.action, a.outcome, a.actor) for a in store.audit_trail(target)]


@pytest.fixture
def review(store: Any) -> int:
    seed_invoice(store)
    schedule(store)
    return needs_review(store)


# --- mark-sent ---------------------------------------------------------------------


def test_mark_sent_without_a_terminal_needs_yes(store: Any, review: int) -> None:
    with freeze_time(LATER):
        result = cli("dunning", "mark-sent", str(review))
    assert result.exit_code == 3
    assert result.stderr.splitlines()[-1] == (
        f"error: marking step {review} (day 0 email for in_1) sent; not running without "
        "confirmation (no terminal to ask on) (re-run with --yes, or on a terminal to be asked)"
    )
    assert step_of(store, 0).status == "needs_review"
    assert trail(store, f"dunning_step:{review}") == [("dunning.mark_sent", "refused", "tester@ci")]


def test_mark_sent_on_a_terminal_shows_the_step_and_no_means_no(
    store: Any, review: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_a_terminal(monkeypatch)
    with freeze_time(LATER):
        declined = cli("dunning", "mark-sent", str(review), input="n\n")
    assert declined.exit_code == 3
    assert "customer: cus_1 (Ada Lovelace · ada@example.com)" in declined.stderr
    assert "invoice:  in_1" in declined.stderr
    assert "amount:   $123.45" in declined.stderr
    assert f"Mark step {review} (day 0 email for in_1) sent? Its message will not be sent." in (
        declined.stderr
    )
    assert "mark-sent canceled at the prompt; nothing was changed" in declined.stderr
    assert step_of(store, 0).status == "needs_review"
    with freeze_time(LATER):
        accepted = cli("dunning", "mark-sent", str(review), input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert step_of(store, 0).status == "sent"
    assert trail(store, f"dunning_step:{review}") == [
        ("dunning.mark_sent", "declined_at_prompt", "tester@ci"),
        ("dunning.mark_sent", "sent", "tester@ci"),
    ]


def test_mark_sent_of_a_step_not_yet_due_needs_force(store: Any, review: int) -> None:
    day1 = step_of(store, 1)
    with freeze_time(LATER):
        refused = cli("dunning", "mark-sent", str(day1.id), "--yes", "--json")
    assert refused.exit_code == 3
    assert body(refused)["error"]["message"] == (
        f"step {day1.id} (day 1 sms for in_1) is not due until 2026-03-03T09:00:00Z; "
        "marking it sent means its message is never sent"
    )
    assert "--force" in body(refused)["error"]["hint"]
    assert step_of(store, 1).status == "scheduled"
    with freeze_time(LATER):
        forced = cli("dunning", "mark-sent", str(day1.id), "--force", "--yes", "--json")
    assert forced.exit_code == 0, forced.output
    assert body(forced)["data"]["status"] == "sent"
    [*_, mark] = store.audit_trail(f"dunning_step:{day1.id}")
    assert (mark.outcome, mark.details["forced"], mark.details["was"]) == (
        "sent",
        True,
        "scheduled",
    )


# --- unmark-sent -------------------------------------------------------------------


def test_a_manual_mark_sent_can_be_undone_and_both_are_audited(
    store: Any, review: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = step_of(store, 0)
    with freeze_time(LATER):
        marked = cli(
            "dunning", "mark-sent", str(review), "--reason", "in the SMTP log", "--yes", "--json"
        )
    assert body(marked)["data"]["reason"] == "marked sent by tester@ci: in the SMTP log"
    monkeypatch.setenv("BILLING_ACTOR", "second@ops")
    with freeze_time(LATER + timedelta(minutes=5)):
        undone = cli(
            "dunning", "unmark-sent", str(review), "--reason", "it was step 2", "--yes", "--json"
        )
    assert undone.exit_code == 0, undone.output
    step = body(undone)["data"]
    assert (step["status"], step["sent_at"], step["reason"]) == (
        "needs_review",
        None,
        before.reason,
    )
    records = store.audit_trail(f"dunning_step:{review}")
    assert [(r.action, r.outcome, r.actor, r.details.get("reason")) for r in records] == [
        ("dunning.mark_sent", "sent", "tester@ci", "in the SMTP log"),
        ("dunning.unmark_sent", "restored", "second@ops", "it was step 2"),
    ]
    assert records[1].details["marked_by"] == "tester@ci"
    # Undone once: there is nothing left to undo.
    again = cli("dunning", "unmark-sent", str(review), "--yes", "--json")
    assert (again.exit_code, body(again)["error"]["code"]) == (2, "invalid_state")


def test_an_undone_mark_of_a_scheduled_step_is_sent_by_the_next_run(
    store: Any, review: int
) -> None:
    day1 = step_of(store, 1)
    with freeze_time(LATER):
        cli("dunning", "mark-sent", str(day1.id), "--force", "--yes")
        result = cli("dunning", "unmark-sent", str(day1.id), "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"step {day1.id} (in_1) is scheduled again (marked sent by")
    restored = step_of(store, 1)
    assert (restored.status, restored.sent_at, restored.due_at) == ("scheduled", None, day1.due_at)


def test_unmark_sent_needs_yes_and_leaves_the_step_sent(store: Any, review: int) -> None:
    with freeze_time(LATER):
        cli("dunning", "mark-sent", str(review), "--yes")
        result = cli("dunning", "unmark-sent", str(review))
    assert result.exit_code == 3
    assert "--yes" in result.stderr
    assert step_of(store, 0).status == "sent"


def test_a_step_a_run_sent_cannot_be_unmarked(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "file")
    monkeypatch.setenv("BILLING_SMS_BACKEND", "file")
    monkeypatch.setenv("BILLING_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(minutes=5)):
        assert cli("dunning", "run").exit_code == 0
    sent = step_of(store, 0)
    assert sent.status == "sent"
    result = cli("dunning", "unmark-sent", str(sent.id), "--yes", "--json")
    assert result.exit_code == 2
    assert body(result)["error"]["message"] == (
        f"step {sent.id} was not marked sent by hand; only a step marked sent with "
        "`dunning mark-sent` can be unmarked"
    )
    assert step_of(store, 0).status == "sent"


def test_the_store_unmarks_only_the_mark_it_is_told_of(store: Any, review: int) -> None:
    store.mark_step_sent(review, ("needs_review",), "marked sent by ann", LATER)
    assert (
        store.unmark_step_sent(
            review,
            marked_reason="marked sent by bob",
            status="needs_review",
            reason=None,
            now=LATER,
        )
        is None
    )
    restored = store.unmark_step_sent(
        review, marked_reason="marked sent by ann", status="needs_review", reason="r", now=LATER
    )
    assert (restored.status, restored.sent_at, restored.reason) == ("needs_review", None, "r")
    assert (
        store.unmark_step_sent(
            review, marked_reason="marked sent by ann", status="failed", reason=None, now=LATER
        )
        is None
    ), "a step no longer sent is not unmarked"


# --- requeue -----------------------------------------------------------------------


def test_requeue_without_a_terminal_needs_yes(store: Any, review: int) -> None:
    result = cli("dunning", "requeue", str(review))
    assert result.exit_code == 3
    assert f"requeueing step {review} (day 0 email for in_1); not running without" in (
        result.stderr
    )
    assert step_of(store, 0).status == "needs_review"
    assert trail(store, f"dunning_step:{review}") == [("dunning.requeue", "refused", "tester@ci")]


def test_requeue_on_a_terminal_warns_of_a_second_message(
    store: Any, review: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_a_terminal(monkeypatch)
    # The run confirmed the step before it died: the provider may have the message.
    assert step_of(store, 0).may_have_been_sent is not None
    result = cli("dunning", "requeue", str(review), input="n\n")
    assert result.exit_code == 3
    assert f"Requeue step {review} (day 0 email for in_1)? The next dunning run sends it." in (
        result.stderr
    )
    assert step_of(store, 0).status == "needs_review"
    accepted = cli("dunning", "requeue", str(review), input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert step_of(store, 0).status == "scheduled"


# --- pause -------------------------------------------------------------------------


def test_a_second_pause_keeps_the_first_and_says_who_paused(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with freeze_time(T0):
        first = cli("dunning", "pause", "--reason", "INC-42 Stripe API outage")
    assert first.exit_code == 0
    monkeypatch.setenv("BILLING_ACTOR", "second@ops")
    with freeze_time(LATER):
        refused = cli("dunning", "pause", "--reason", "INC-43")
    assert refused.exit_code == 3
    assert refused.stderr.splitlines()[-1] == (
        "error: dunning is already paused, by tester@ci at 2026-03-02T09:00:00Z: INC-42 Stripe "
        "API outage; not running without confirmation (no terminal to ask on) (that pause "
        "stays as it is; --yes adds your reason beside it)"
    )
    setting = store.get_setting(PAUSE_SETTING)
    assert (setting["reason"], setting["actor"], setting["at"]) == (
        "INC-42 Stripe API outage",
        "tester@ci",
        "2026-03-02T09:00:00Z",
    )
    with freeze_time(LATER):
        added = cli("dunning", "pause", "--reason", "INC-43", "--yes", "--json")
    assert added.exit_code == 0, added.output
    # Nobody was asked, but the log still says what was confirmed.
    assert "pause (--yes): dunning is already paused, by tester@ci at" in added.stderr
    assert body(added)["data"] == {
        "paused": True,
        "reason": "INC-42 Stripe API outage",
        "actor": "tester@ci",
        "at": "2026-03-02T09:00:00Z",
        "already_paused": True,
        "also": [{"reason": "INC-43", "actor": "second@ops", "at": "2026-03-02T10:00:00Z"}],
    }
    assert [(a.action, a.outcome, a.actor) for a in store.audit_trail("dunning")] == [
        ("dunning.pause", "paused", "tester@ci"),
        ("dunning.pause", "refused", "second@ops"),
        ("dunning.pause", "already_paused", "second@ops"),
    ]
    resumed = cli("dunning", "resume")
    assert "paused by tester@ci at 2026-03-02 09:00 UTC: INC-42 Stripe API outage" in (
        resumed.stdout
    )


def test_a_second_pause_declined_at_the_prompt_changes_nothing(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("dunning", "pause", "--reason", "INC-42")
    on_a_terminal(monkeypatch)
    result = cli("dunning", "pause", "--reason", "INC-43", input="n\n")
    assert result.exit_code == 3
    assert "Keep it, and add your reason (INC-43)?" in result.stderr
    assert "the pause is unchanged" in result.stderr
    assert store.get_setting(PAUSE_SETTING).get("also") is None


# --- alerts ------------------------------------------------------------------------


def open_alert(store: Any) -> str:
    """An invoice_failed alert on a mirrored invoice, raised as sync raises it."""
    seed_invoice(store)
    raised = store.raise_alert(
        AlertDraft(
            type="invoice_failed",
            dedupe_key=invoice_alert_key("invoice_failed", "in_1"),
            customer_id="cus_1",
            invoice_id="in_1",
            amount_due=12345,
            currency="usd",
            stripe_event_id="evt_1QpL8HLkdIwHu7ixFailed01",
            attempt_count=1,
            last_failure="card_declined",
        ),
        actor="stripe:webhook",
        now=T0,
    )
    return str(raised.alert.id)


def test_a_second_ack_says_already_acknowledged(store: Any) -> None:
    alert_id = open_alert(store)
    with freeze_time(LATER):
        first = cli("alerts", "ack", alert_id)
    assert first.exit_code == 0
    with freeze_time(LATER + timedelta(hours=2)):
        again = cli("alerts", "ack", alert_id)
        as_json = cli("alerts", "ack", alert_id, "--json")
    assert again.exit_code == 0
    assert again.stdout.strip() == (
        f"alert {alert_id} already acknowledged by tester@ci at 2026-03-02 10:00 UTC; "
        "nothing changed"
    )
    assert (body(as_json)["data"]["status"], body(as_json)["data"]["changed"]) == (
        "acknowledged",
        False,
    )
    assert [a.action for a in store.audit_trail(f"alert:{alert_id}")].count("alert.ack") == 1


def test_resolve_without_a_terminal_needs_yes(store: Any) -> None:
    alert_id = open_alert(store)
    result = cli("alerts", "resolve", alert_id, "--reason", "paid by check")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[-1].startswith(
        f"error: resolving alert {alert_id} (invoice_failed); not running without confirmation"
    )
    assert store.get_alert(int(alert_id)).status == "open"
    assert trail(store, f"alert:{alert_id}")[-1] == ("alert.resolve", "refused", "tester@ci")


def test_resolve_on_a_terminal_asks_and_a_resolved_alert_is_left_unasked(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alert_id = open_alert(store)
    on_a_terminal(monkeypatch)
    declined = cli("alerts", "resolve", alert_id, "--reason", "paid by check", input="n\n")
    assert declined.exit_code == 3
    assert "customer: cus_1 (Ada Lovelace · ada@example.com)" in declined.stderr
    assert "amount:   $123.45" in declined.stderr
    assert f"Resolve alert {alert_id} (invoice_failed, open) as 'paid by check'?" in (
        declined.stderr
    )
    assert store.get_alert(int(alert_id)).status == "open"
    accepted = cli("alerts", "resolve", alert_id, "--reason", "paid by check", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert store.get_alert(int(alert_id)).resolution == "paid by check"
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: False)
    again = cli("alerts", "resolve", alert_id, "--json")
    assert again.exit_code == 0
    assert body(again)["data"]["changed"] is False
