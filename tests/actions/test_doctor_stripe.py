"""``doctor``'s Stripe check: the key's mode, whether Stripe answers, and whose account."""

from __future__ import annotations

from typing import Any

import pytest

from tests.actions.conftest import data, run
from tests.stripe_fake import FakeStripe, server_error, unused_port


def stripe_check(result: Any) -> dict[str, str]:
    [check] = [check for check in data(result)["checks"] if check["name"] == "stripe"]
    return check


def test_no_key_is_not_configured_and_not_a_failure(sqlite_env: str) -> None:
    result = run("doctor", "--json")

    assert stripe_check(result) == {
        "name": "stripe",
        "status": "not_configured",
        "detail": "STRIPE_SECRET_KEY is not set",
    }


def test_a_working_key_shows_mode_and_account(stripe: FakeStripe, sqlite_env: str) -> None:
    result = run("doctor", "--json")

    assert stripe_check(result) == {
        "name": "stripe",
        "status": "ok",
        "detail": "test mode key sk_test_…0000, account acct_1TestCloudGreet (CloudGreet Test)",
    }
    assert [request.path for request in stripe.requests] == ["/v1/account"]


def test_unreachable_stripe_fails_the_check(
    fake_stripe: FakeStripe, sqlite_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", fake_stripe.api_key)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{unused_port()}")

    result = run("doctor", "--json")

    assert result.exit_code == 1
    check = stripe_check(result)
    assert check["status"] == "fail"
    assert "cannot reach Stripe" in check["detail"]


def test_a_revoked_key_fails_the_check(
    fake_stripe: FakeStripe, sqlite_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_revoked000000000000000001")
    monkeypatch.setenv("STRIPE_API_BASE", fake_stripe.url)

    result = run("doctor", "--json")

    check = stripe_check(result)
    assert check["status"] == "fail"
    assert check["detail"].startswith("live mode key sk_live_…0001: Stripe rejected the API key")
    assert "sk_live_revoked" not in result.stdout
    fake_stripe.violations.clear()  # the wrong key was the point


def test_stripe_failing_fails_the_check(stripe: FakeStripe, sqlite_env: str) -> None:
    stripe.reply("GET", "/v1/account", server_error())

    result = run("doctor")

    assert result.exit_code == 1
    assert "✗ stripe: fail — test mode key sk_test_…0000: Stripe failed" in result.stdout
