"""``retry`` end to end: the CLI, the real stripe SDK, a local Stripe that checks each
request, and the store; every case asserts the audit story it leaves."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cloudgreet_billing.bootstrap import open_gateway, open_store
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.dunning import PAUSE_SETTING
from cloudgreet_billing.services.actions import Safety, retry_payment
from tests.actions.conftest import (
    ACCOUNT,
    INVOICE_ID,
    NOW,
    alert_notes,
    alert_row,
    data,
    error,
    insert_alert,
    invoice,
    requires_action_body,
    run,
    step_statuses,
    story,
)
from tests.stripe_fake import (
    FakeStripe,
    Recorded,
    Reply,
    card_declined,
    error_body,
    not_found,
    rate_limited,
    server_error,
    unused_port,
)

PAY = f"/v1/invoices/{INVOICE_ID}/pay"
GET = f"/v1/invoices/{INVOICE_ID}"
KEY = f"cloudgreet-billing:retry:{INVOICE_ID}:attempt-1"


def test_success_resolves_the_alert_cancels_dunning_and_mirrors_the_invoice(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert data(result) == {
        "invoice_id": INVOICE_ID,
        "status": "paid",
        "amount_paid": 12000,
        "currency": "usd",
        "alert_id": 1,
        "alert_status": "resolved",
        "decline_code": None,
        "outcome": "paid",
        "amount": 12000,
    }
    assert "Stripe test mode · account acct_1TestCloudGreet (CloudGreet Test)" in result.stderr
    [pay] = stripe.requests_to("POST", PAY)
    assert pay.idempotency_key == KEY
    assert pay.form == {}
    assert alert_row(seeded, 1)["status"] == "resolved"
    assert step_statuses(seeded) == ["canceled", "canceled", "canceled"]
    assert seeded.get_invoice(INVOICE_ID).status == "paid"
    assert story(seeded) == [("retry", "intent", KEY), ("retry", "paid", KEY)]
    intent, outcome = seeded.audit_trail(INVOICE_ID)
    assert intent.actor == outcome.actor == "tester@ci"
    assert intent.details["request"] == {
        "method": "POST",
        "path": PAY,
        "params": {},
        "idempotency_key": KEY,
    }
    assert intent.details["amount_due"] == 12000
    assert outcome.details["resolved_alerts"] == [1]
    assert outcome.details["canceled_steps"] == 3


def test_alert_show_tells_the_retry_keyed_by_the_invoice(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))
    assert run("retry", "1", "--yes", "--json").exit_code == 0

    shown = data(run("alerts", "show", "1", "--json"))

    assert [(a["action"], a["target"], a["outcome"]) for a in shown["audit_trail"]] == [
        ("retry", INVOICE_ID, "intent"),
        ("alert.resolve", "alert:1", "resolved"),
        ("retry", INVOICE_ID, "paid"),
    ]
    assert shown["audit_trail"][0]["details"]["request"]["idempotency_key"] == KEY
    human = run("alerts", "show", "1").stdout
    assert f"tester@ci retry {INVOICE_ID}: intent" in human
    assert f"tester@ci retry {INVOICE_ID}: paid" in human


def test_human_success_names_what_changed(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    result = run("retry", INVOICE_ID, "--yes")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"paid: invoice {INVOICE_ID}, $120.00 (alert 1 resolved; 3 pending dunning steps canceled)"
    )
    # Nobody was asked, but the log still says who was charged and how much.
    assert "retry (--yes):" in result.stderr
    assert "customer: cus_QTestAcme01 (Acme Dental · ap@acme-dental.test)" in result.stderr
    assert "amount:   $120.00" in result.stderr


def test_live_mode_is_unmistakable(seeded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudgreet_billing.adapters.stripe as adapter

    monkeypatch.setattr(adapter, "RETRY_BASE_DELAY", 0.0)
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)
    with FakeStripe(api_key="sk_live_51LiveKey00000000000000009f3a") as live:
        monkeypatch.setenv("STRIPE_SECRET_KEY", live.api_key)
        monkeypatch.setenv("STRIPE_API_BASE", live.url)
        live.reply("GET", "/v1/account", ACCOUNT)
        live.reply("GET", GET, invoice("open"))

        result = run("retry", "1", input="n\n")

    live.assert_clean()
    assert result.exit_code == 3
    assert "Stripe LIVE mode · account acct_1TestCloudGreet" in result.stderr
    assert "key sk_live_…9f3a" in result.stderr
    assert "[LIVE] Charge cus_QTestAcme01" in result.stderr
    assert live.requests_to("POST", PAY) == []
    assert seeded.audit_trail(INVOICE_ID)[0].details["mode"] == "live"


def test_decline_prints_the_code_keeps_the_alert_open_and_records_the_attempt(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, card_declined("insufficient_funds"))

    result = run("retry", "1", "--yes")

    assert result.exit_code == 1
    assert "insufficient_funds" in result.stderr
    assert "Your card has insufficient funds." in result.stderr
    assert "alert 1 stays open" in result.stderr
    assert result.stderr.count("error:") == 1
    alert = alert_row(seeded, 1)
    assert alert["status"] == "open"
    assert alert["attempt_count"] == 2
    assert alert["last_failure"].startswith("insufficient_funds: ")
    assert alert_notes(seeded, 1)[0][0] == "tester@ci"
    assert "declined (insufficient_funds)" in alert_notes(seeded, 1)[0][1]
    assert step_statuses(seeded) == ["scheduled", "scheduled", "scheduled"]
    assert story(seeded) == [("retry", "intent", KEY), ("retry", "declined", KEY)]
    declined = seeded.audit_trail(INVOICE_ID)[-1]
    assert declined.details["decline_code"] == "insufficient_funds"
    assert declined.details["stripe_code"] == "card_declined"


def test_decline_in_json_carries_the_retry_fields(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, card_declined("insufficient_funds"))

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 1
    body = error(result)
    assert body["code"] == "payment_declined"
    assert body["decline_code"] == "insufficient_funds"
    assert (body["invoice_id"], body["status"], body["alert_id"], body["alert_status"]) == (
        INVOICE_ID,
        "open",
        1,
        "open",
    )


def test_a_retry_after_a_decline_is_a_new_attempt(stripe: FakeStripe, seeded: Any) -> None:
    # Stripe counts only the first manual attempt: attempt_count stays 1 after a decline.
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, card_declined("insufficient_funds"), invoice("paid"))

    first = run("retry", "1", "--yes")
    second = run("retry", "1", "--yes")

    assert (first.exit_code, second.exit_code) == (1, 0)
    keys = [request.idempotency_key for request in stripe.requests_to("POST", PAY)]
    assert keys == [KEY, f"{KEY}.1"]
    assert [outcome for _, outcome, _ in story(seeded)] == ["intent", "declined", "intent", "paid"]


def test_authentication_required_opens_an_action_alert_and_suggests_links(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, Reply(402, requires_action_body()))

    result = run("retry", INVOICE_ID, "--yes")

    assert result.exit_code == 1
    assert "authenticate" in result.stderr
    assert f"https://invoice.stripe.com/i/acct_test/{INVOICE_ID}" in result.stderr
    assert f"cloudgreet-billing portal {INVOICE_ID} --send" in result.stderr
    action = alert_row(seeded, 2)
    assert (action["type"], action["status"]) == ("payment_action_required", "open")
    assert alert_row(seeded, 1)["status"] == "open"
    assert story(seeded) == [("retry", "intent", KEY), ("retry", "requires_action", KEY)]
    assert seeded.audit_trail(INVOICE_ID)[-1].details["stripe_code"] == (
        "invoice_payment_intent_requires_action"
    )


def test_already_paid_charges_nothing_and_resolves_the_alert(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, invoice("paid"))

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["status"] == "paid"
    assert data(result)["alert_status"] == "resolved"
    assert stripe.requests_to("POST", PAY) == []
    assert alert_row(seeded, 1)["status"] == "resolved"
    assert step_statuses(seeded) == ["canceled", "canceled", "canceled"]
    assert story(seeded) == [("retry", "already_paid", None)]


def test_paid_meanwhile_is_success_without_a_second_charge(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"), invoice("paid"))
    stripe.reply(
        "POST",
        PAY,
        Reply(400, error_body("Invoice is already paid", code="invoice_already_paid")),
    )

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["alert_status"] == "resolved"
    assert story(seeded) == [("retry", "intent", KEY), ("retry", "already_paid", KEY)]


def test_rate_limited_then_success_reuses_the_idempotency_key(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, rate_limited(), invoice("paid"))

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 0, result.output
    keys = [request.idempotency_key for request in stripe.requests_to("POST", PAY)]
    assert keys == [KEY, KEY]
    assert story(seeded) == [("retry", "intent", KEY), ("retry", "paid", KEY)]


def test_server_error_exits_75_and_the_audit_says_unavailable(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, server_error())

    result = run("retry", "1", "--yes")

    assert result.exit_code == 75
    assert "HTTP 500" in result.stderr
    assert "may or may not have charged it" in result.stderr
    # Stripe saved the 500 under the key and says Stripe-Should-Retry: false (a retry
    # would only replay it), so the SDK does not try again.
    [pay] = stripe.requests_to("POST", PAY)
    assert pay.idempotency_key == KEY
    assert alert_row(seeded, 1)["status"] == "open"
    assert step_statuses(seeded) == ["scheduled", "scheduled", "scheduled"]
    assert story(seeded) == [("retry", "intent", KEY), ("retry", "unavailable", KEY)]
    assert seeded.audit_trail(INVOICE_ID)[-1].details["error_code"] == "stripe_unavailable"


def test_refused_connection_exits_75_and_is_audited(
    fake_stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", fake_stripe.api_key)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{unused_port()}")

    result = run("retry", "1", "--yes")

    assert result.exit_code == 75
    assert "cannot reach Stripe" in result.stderr
    assert story(seeded) == [("retry", "unavailable", None)]
    assert alert_row(seeded, 1)["status"] == "open"


def test_dry_run_prints_the_request_and_sends_nothing(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))

    result = run("retry", "1", "--dry-run")

    assert result.exit_code == 0, result.output
    assert f"would charge $120.00 for invoice {INVOICE_ID}" in result.stdout
    assert f"POST {PAY}" in result.stdout
    assert f"Idempotency-Key: {KEY}" in result.stdout
    assert "key: sk_test_…0000 (test mode)" in result.stdout
    assert "checked against: Stripe, just now" in result.stdout
    assert "dry run: checks Stripe, sends nothing" in result.stderr
    # It reads what a real run reads, and sends nothing.
    assert [(r.method, r.path) for r in stripe.requests] == [("GET", "/v1/account"), ("GET", GET)]
    assert story(seeded) == [("retry", "dry_run", KEY)]
    assert seeded.audit_trail(INVOICE_ID)[0].details["dry_run"] is True


def test_dry_run_json_shows_the_request(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))

    result = run("retry", "1", "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["request"] == {
        "method": "POST",
        "path": PAY,
        "params": {},
        "idempotency_key": KEY,
    }
    assert data(result)["dry_run"] is True
    assert (data(result)["outcome"], data(result)["amount"]) == ("dry_run", 12000)
    assert data(result)["stripe_key"] == "sk_test_…0000"
    assert (data(result)["mode"], data(result)["checked_against"]) == ("test", "stripe")
    assert stripe.requests_to("POST", PAY) == []


def test_not_interactive_without_yes_exits_3_before_any_request(
    stripe: FakeStripe, seeded: Any
) -> None:
    result = run("retry", "1")

    assert result.exit_code == 3
    assert "--yes" in result.stderr
    assert stripe.requests == []
    assert story(seeded) == [("retry", "refused", None)]


def test_the_prompt_shows_customer_invoice_and_amount_and_no_means_no(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    result = run("retry", "1", input="n\n")

    assert result.exit_code == 3
    assert "cus_QTestAcme01 (Acme Dental · ap@acme-dental.test)" in result.stderr
    assert f"invoice:  {INVOICE_ID}" in result.stderr
    assert "amount:   $120.00" in result.stderr
    assert "[test] Charge cus_QTestAcme01" in result.stderr
    assert stripe.requests_to("POST", PAY) == []
    assert story(seeded) == [("retry", "declined_at_prompt", None)]


def test_end_of_input_at_the_prompt_is_a_no(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)
    stripe.reply("GET", GET, invoice("open"))

    result = run("retry", "1", input="")

    assert result.exit_code == 3
    assert stripe.requests_to("POST", PAY) == []
    assert story(seeded) == [("retry", "declined_at_prompt", None)]


def test_the_prompt_yes_charges(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    result = run("retry", "1", input="y\n")

    assert result.exit_code == 0, result.output
    assert len(stripe.requests_to("POST", PAY)) == 1


def test_paused_dunning_refuses_with_75_unless_forced(stripe: FakeStripe, seeded: Any) -> None:
    seeded.put_setting(
        PAUSE_SETTING, {"paused": True, "reason": "Stripe incident", "actor": "ops"}, "ops", NOW
    )
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    refused = run("retry", "1", "--yes")

    assert refused.exit_code == 75
    assert "dunning is paused (Stripe incident, by ops)" in refused.stderr
    assert "--force" in refused.stderr
    assert stripe.requests == []

    forced = run("retry", "1", "--yes", "--force")

    assert forced.exit_code == 0, forced.output
    assert story(seeded) == [
        ("retry", "refused", None),
        ("retry", "intent", KEY),
        ("retry", "paid", KEY),
    ]
    assert seeded.audit_trail(INVOICE_ID)[0].details["reason"] == "dunning paused"


def test_unknown_alert_exits_2_naming_it(stripe: FakeStripe, seeded: Any) -> None:
    result = run("retry", "999", "--yes")

    assert result.exit_code == 2
    assert "no alert 999" in result.stderr
    assert stripe.requests == []


def test_unknown_invoice_exits_2_naming_it(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", "/v1/invoices/in_missing", not_found("invoice", "in_missing"))

    result = run("retry", "in_missing", "--yes")

    assert result.exit_code == 2
    assert "no invoice in_missing in Stripe (test mode)" in result.stderr


def test_an_id_of_the_wrong_kind_exits_2(stripe: FakeStripe, seeded: Any) -> None:
    result = run("retry", "cus_QTestAcme01", "--yes")

    assert result.exit_code == 2
    assert "is not an alert id (a number), an invoice id (in_…)" in result.stderr


def test_two_concurrent_retries_send_one_idempotency_key_and_charge_once(
    stripe: FakeStripe, seeded: Any
) -> None:
    both_read = threading.Barrier(2, timeout=10)
    charges: dict[str, list[dict[str, Any]]] = {}
    lock = threading.Lock()

    def read(request: Recorded) -> Reply:
        both_read.wait()  # neither run pays before both have read the invoice
        return Reply(200, invoice("open"))

    def pay(request: Recorded) -> Reply:
        # The fake's idempotency layer replays the first answer to a key (or answers 409
        # while it runs, which the SDK retries), so this runs once per key: one charge.
        with lock:
            key = request.idempotency_key or ""
            charges.setdefault(key, []).append(invoice("paid"))
            return Reply(200, charges[key][0])

    stripe.reply("GET", GET, read)
    stripe.reply("POST", PAY, pay)
    settings = load_settings()
    results: list[Any] = []
    failures: list[BaseException] = []

    def one_run() -> None:
        store = open_store(settings)
        try:
            results.append(
                retry_payment(
                    store,
                    open_gateway(settings),
                    "1",
                    safety=Safety(assume_yes=True),
                    actor="tester@ci",
                )
            )
        except BaseException as exc:  # surfaced below
            failures.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    keys = {request.idempotency_key for request in stripe.requests_to("POST", PAY)}
    assert keys == {KEY}
    assert [(key, len(made)) for key, made in charges.items()] == [(KEY, 1)]
    assert [result.status for result in results] == ["paid", "paid"]
    assert sorted(outcome for _, outcome, _ in story(seeded)) == [
        "intent",
        "intent",
        "paid",
        "paid",
    ]


def test_an_alert_without_an_invoice_cannot_be_retried(stripe: FakeStripe, seeded: Any) -> None:
    with seeded._transaction():
        seeded._execute("UPDATE billing_alerts SET invoice_id = NULL, type = 'threshold_exceeded'")

    result = run("retry", "1", "--yes")

    assert result.exit_code == 2
    assert "alert 1 (threshold_exceeded) has no invoice to retry" in result.stderr


def test_void_invoice_is_not_charged(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("void"))

    result = run("retry", "1", "--yes")

    assert result.exit_code == 2
    assert "is void: there is nothing to charge" in result.stderr
    assert stripe.requests_to("POST", PAY) == []
    assert story(seeded) == [("retry", "refused", None)]


def test_action_alert_is_reused_on_a_second_requires_action(
    stripe: FakeStripe, seeded: Any
) -> None:
    insert_alert(seeded, "payment_action_required")
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, Reply(402, requires_action_body()))

    result = run("retry", INVOICE_ID, "--yes", "--json")

    assert result.exit_code == 1
    assert error(result)["action_alert_id"] == 2


def test_from_cron_without_yes_a_real_process_exits_3_and_sends_nothing(
    stripe: FakeStripe, seeded: Any
) -> None:
    import os
    import subprocess
    import sys

    finished = subprocess.run(
        [sys.executable, "-m", "cloudgreet_billing", "retry", "1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )

    assert finished.returncode == 3, finished.stderr
    assert "--yes" in finished.stderr
    assert stripe.requests == []


def test_after_a_500_the_next_retry_reads_the_invoice_and_sends_a_new_key(
    stripe: FakeStripe, seeded: Any
) -> None:
    # Stripe keeps a 500 under its key for 24 hours: the same key would get it back.
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, server_error(), invoice("paid"))

    first = run("retry", "1", "--yes")
    second = run("retry", "1", "--yes", "--json")

    assert (first.exit_code, second.exit_code) == (75, 0), second.output
    assert [r.idempotency_key for r in stripe.requests_to("POST", PAY)] == [KEY, f"{KEY}.1"]
    assert data(second)["outcome"] == "paid"
    assert len(stripe.requests_to("GET", GET)) == 2


def test_a_timeout_keeps_the_key_so_stripe_can_replay_what_it_did(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "1")
    stripe.reply("GET", GET, invoice("open"))

    charged = threading.Event()
    released = threading.Event()

    def charged_but_slow(request: Recorded) -> Reply:
        # Stripe charges; the answer comes after our deadline, once the test lets it
        # (an event, not a sleep, so a loaded machine cannot reorder the three runs).
        released.wait(30)
        charged.set()
        return Reply(200, invoice("paid"))

    stripe.reply("POST", PAY, charged_but_slow)

    first = run("retry", "1", "--yes")
    # While Stripe still works on the first request, the same key is "in use": 75.
    meanwhile = run("retry", "1", "--yes", "--json")
    released.set()
    assert charged.wait(5)
    second = run("retry", "1", "--yes", "--json")

    assert first.exit_code == 75
    assert "may or may not have charged it" in first.stderr
    assert (meanwhile.exit_code, error(meanwhile)["code"]) == (75, "stripe_conflict")
    assert second.exit_code == 0, second.output
    assert data(second)["outcome"] == "paid"
    # The key stayed the same, so Stripe replayed the charge it made instead of making two.
    assert {r.idempotency_key for r in stripe.requests_to("POST", PAY)} == {KEY}
    assert [line.outcome for line in seeded.audit_trail(INVOICE_ID)][-1] == "paid"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (card_declined("insufficient_funds"), "declined"),
        (Reply(402, requires_action_body()), "requires_action"),
    ],
)
def test_retry_json_says_a_failed_outcome_and_the_amount(
    stripe: FakeStripe, seeded: Any, answer: Reply, outcome: str
) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, answer)

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 1
    body = error(result)
    assert (body["outcome"], body["amount"], body["currency"]) == (outcome, 12000, "usd")
    assert {"invoice_id", "status", "amount_paid", "alert_id", "alert_status", "decline_code"} <= (
        set(body)
    )


def test_retry_json_says_already_paid_and_charges_nothing(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("paid"))

    result = run("retry", "1", "--yes", "--json")

    assert (data(result)["outcome"], data(result)["amount"]) == ("already_paid", 0)


def test_retry_json_says_submitted_when_stripe_has_not_confirmed(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("open"))

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 0
    assert (data(result)["outcome"], data(result)["amount"]) == ("submitted", 12000)
    assert (data(result)["status"], data(result)["alert_status"]) == ("open", "open")
