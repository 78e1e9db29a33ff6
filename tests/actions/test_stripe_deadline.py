"""Operator actions against a Stripe that hangs or crawls: stderr says Stripe is slow, the
command exits 75 at its deadline (STRIPE_TIMEOUT_SECONDS), and the audit says so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from cloudgreet_billing.adapters.deadline import StripeDeadline
from cloudgreet_billing.adapters.stripe import StripeGateway
from cloudgreet_billing.services.actions import ConfirmRequest, Safety, retry_payment
from tests.actions.conftest import ACCOUNT, INVOICE_ID, alert_row, error, invoice, run, story
from tests.stripe_fake import TEST_API_KEY, FakeStripe, Recorded, Reply, SilentServer

PAY = f"/v1/invoices/{INVOICE_ID}/pay"
GET = f"/v1/invoices/{INVOICE_ID}"


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI pointed at a Stripe that accepts connections and never answers, with a
    one-second deadline."""
    with SilentServer() as server:
        monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
        monkeypatch.setenv("STRIPE_API_BASE", server.url)
        monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "1")
        yield server


def test_retry_against_a_silent_stripe_says_it_is_slow_and_exits_75(
    silent: SilentServer, seeded: Any
) -> None:
    started = time.monotonic()
    result = run("retry", "1", "--yes")
    took = time.monotonic() - started

    assert result.exit_code == 75
    assert 0.9 <= took < 3.0
    assert "Stripe is slow: no answer yet to retrieve the account after" in result.stderr
    assert "waiting at most 1 s in all (STRIPE_TIMEOUT_SECONDS)" in result.stderr
    assert (
        "error: Stripe did not answer in time to retrieve the account: 1 s, this command's "
        "limit for Stripe, has passed" in result.stderr
    )
    assert len(silent.accepted) == 1
    assert story(seeded) == [("retry", "unavailable", None)]
    assert seeded.audit_trail(INVOICE_ID)[0].details["error_code"] == "stripe_timeout"
    assert alert_row(seeded, 1)["status"] == "open"


def test_resend_link_and_portal_share_the_deadline(
    silent: SilentServer, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.test")

    resent = run("resend-link", "1", "--yes", "--json")
    portal = run("portal", "1", "--json")

    assert (resent.exit_code, portal.exit_code) == (75, 75)
    assert error(resent)["code"] == error(portal)["code"] == "stripe_timeout"


def test_a_slow_but_answering_stripe_is_waited_for_and_said_to_be_slow(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "4")  # slow after a quarter: 1 s

    def slow_account(request: Recorded) -> Reply:
        time.sleep(1.3)
        return Reply(200, ACCOUNT)

    stripe.reply("GET", "/v1/account", slow_account)
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    result = run("retry", "1", "--yes")

    assert result.exit_code == 0, result.output
    assert result.stderr.count("Stripe is slow") == 1
    assert "no answer yet to retrieve the account after 1 s" in result.stderr
    assert result.stdout.startswith(f"paid: invoice {INVOICE_ID}")


def test_time_at_the_prompt_is_not_charged_to_stripe(fake_stripe: FakeStripe, seeded: Any) -> None:
    fake_stripe.reply("GET", "/v1/account", ACCOUNT)
    fake_stripe.reply("GET", GET, invoice("open"))
    fake_stripe.reply("POST", PAY, invoice("paid"))
    offset = [0.0]
    deadline = StripeDeadline(1.0, clock=lambda: time.monotonic() + offset[0])

    def think_for_a_minute(request: ConfirmRequest) -> bool:
        offset[0] += 60.0
        return True

    result = retry_payment(
        seeded,
        StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, deadline=deadline),
        "1",
        safety=Safety(interactive=True, confirm=think_for_a_minute),
        actor="tester@ci",
    )

    assert result.outcome == "paid"
    assert len(fake_stripe.requests_to("POST", PAY)) == 1


def test_a_real_process_from_cron_exits_75_in_seconds(silent: SilentServer, seeded: Any) -> None:
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-m", "cloudgreet_billing", "retry", "1", "--yes", "--json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started

    assert finished.returncode == 75, finished.stderr
    assert '"code": "stripe_timeout"' in finished.stdout
    assert "Stripe is slow" in finished.stderr
    assert took < 10  # start-up included; without the deadline: 122 s
