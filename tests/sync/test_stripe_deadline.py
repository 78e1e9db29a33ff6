"""A Stripe that never answers, or answers slowly: one deadline per command, through the real
SDK over real sockets. Deadlines are configured short (about a second), so a test that
would have hung for 122 s (a 40 s read timeout, three tries) ends in one or two."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from typer.testing import CliRunner

import cloudgreet_billing.adapters.stripe as adapter
from cloudgreet_billing.adapters.deadline import SlowStripe, StripeDeadline
from cloudgreet_billing.adapters.stripe import StripeGateway
from cloudgreet_billing.cli import app
from cloudgreet_billing.errors import ExitCode, Unavailable
from tests.stripe_fake import TEST_API_KEY, FakeStripe, Recorded, Reply, SilentServer, server_error


def slow(seconds: float, body: dict[str, Any]) -> Any:
    """A responder that takes ``seconds`` before it answers (a slow Stripe)."""

    def answer(request: Recorded) -> Reply:
        time.sleep(seconds)
        return Reply(200, body)

    return answer


def test_a_silent_stripe_ends_at_the_deadline_without_retrying() -> None:
    with SilentServer() as silent:
        gateway = StripeGateway(TEST_API_KEY, api_base=silent.url, deadline=StripeDeadline(1.0))
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            gateway.retrieve_invoice("in_1QpL8HLkdIwHu7ixl4OzzPMv")
        took = time.monotonic() - started

    assert caught.value.code == "stripe_timeout"
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert "did not answer in time to retrieve invoice in_1QpL8HLkdIwHu7ixl4OzzPMv" in str(
        caught.value
    )
    assert "STRIPE_TIMEOUT_SECONDS" in (caught.value.hint or "")
    assert 0.9 <= took < 2.0
    # The read timeout was cut to the deadline, and no retry started after it.
    assert len(silent.accepted) == 1


def test_each_request_gets_only_the_time_left(fake_stripe: FakeStripe) -> None:
    fake_stripe.reply("GET", "/v1/account", slow(0.6, {"id": "acct_1", "object": "account"}))
    fake_stripe.reply("GET", "/v1/invoices/in_1", slow(0.6, {"id": "in_1"}))
    gateway = StripeGateway(
        fake_stripe.api_key, api_base=fake_stripe.url, deadline=StripeDeadline(1.0)
    )

    assert gateway.retrieve_account()["id"] == "acct_1"
    started = time.monotonic()
    with pytest.raises(Unavailable, match="did not answer in time"):
        gateway.retrieve_invoice("in_1")

    # About 0.4 s were left for the second request, not a fresh second (or 40 s).
    assert time.monotonic() - started < 0.6
    assert len(fake_stripe.requests_to("GET", "/v1/invoices/in_1")) == 1


def test_no_retry_starts_after_the_deadline(
    fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK would retry this 500 after a back-off of 1 to 2 s: past the deadline.
    monkeypatch.setattr(adapter, "RETRY_BASE_DELAY", 2.0)
    fake_stripe.reply("GET", "/v1/invoices/in_1", server_error())
    gateway = StripeGateway(
        fake_stripe.api_key, api_base=fake_stripe.url, deadline=StripeDeadline(1.0)
    )

    started = time.monotonic()
    with pytest.raises(Unavailable, match="HTTP 500"):
        gateway.retrieve_invoice("in_1")

    assert time.monotonic() - started < 0.5  # it did not sleep into a retry it could not make
    assert len(fake_stripe.requests_to("GET", "/v1/invoices/in_1")) == 1


def test_the_slow_notice_is_told_once_while_the_request_still_waits(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.reply("GET", "/v1/account", slow(0.5, {"id": "acct_1", "object": "account"}))
    told: list[SlowStripe] = []
    deadline = StripeDeadline(2.0, on_slow=told.append, slow_after=0.2)
    gateway = StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, deadline=deadline)

    gateway.retrieve_account()
    gateway.retrieve_account()

    assert [(slow.what, slow.seconds, slow.setting) for slow in told] == [
        ("retrieve the account", 2.0, "STRIPE_TIMEOUT_SECONDS")
    ]
    assert told[0].waited >= 0.2


def test_a_fast_stripe_is_never_called_slow(fake_stripe: FakeStripe) -> None:
    fake_stripe.reply("GET", "/v1/account", {"id": "acct_1", "object": "account"})
    told: list[SlowStripe] = []
    deadline = StripeDeadline(2.0, on_slow=told.append, slow_after=0.2)
    gateway = StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, deadline=deadline)

    gateway.retrieve_account()
    time.sleep(0.3)  # longer than slow_after, outside any request: nothing to tell

    assert told == []


def test_only_time_waiting_on_stripe_is_charged() -> None:
    now = [1000.0]
    deadline = StripeDeadline(10.0, clock=lambda: now[0])

    with deadline.waiting("retrieve the account"):
        now[0] += 4
    now[0] += 600  # a person thinking at the prompt
    assert deadline.left() == 6.0
    with deadline.waiting("pay invoice in_1"):
        now[0] += 7
        assert deadline.left() == -1.0
    assert deadline.expired


def test_sync_from_a_silent_stripe_exits_75_naming_the_batch_setting(
    store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SilentServer() as silent:
        monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
        monkeypatch.setenv("STRIPE_API_BASE", silent.url)
        monkeypatch.setenv("STRIPE_BATCH_TIMEOUT_SECONDS", "1")
        monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "0.1")  # interactive: not sync's
        started = time.monotonic()
        result = CliRunner().invoke(app, ["sync", "--json"], catch_exceptions=False)
        took = time.monotonic() - started

    assert result.exit_code == 75
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["timeout_seconds"]) == ("stripe_timeout", 1.0)
    assert "STRIPE_BATCH_TIMEOUT_SECONDS" in error["hint"]
    assert "Stripe is slow: no answer yet to list events" in result.stderr
    assert 0.9 <= took < 3.0
