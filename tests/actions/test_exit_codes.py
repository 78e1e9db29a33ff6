"""The same condition exits the same way in every action, and a dry run exits as the real
run would (README: "Operator actions: conditions and exit codes")."""

from __future__ import annotations

from typing import Any

import pytest

from cloudgreet_billing.domain.dunning import PAUSE_SETTING
from tests.actions.conftest import CUSTOMER_ID, INVOICE_ID, NOW, customer, error, invoice, run
from tests.stripe_fake import FakeStripe, not_found

GET = f"/v1/invoices/{INVOICE_ID}"
PAY = f"/v1/invoices/{INVOICE_ID}/pay"
SEND = f"/v1/invoices/{INVOICE_ID}/send"
SESSIONS = "/v1/billing_portal/sessions"


def attempt(command: str, given: str, *, dry_run: bool, extra: tuple[str, ...] = ()) -> Any:
    flags = ("--dry-run",) if dry_run else ("--yes",)
    if command == "portal" and not dry_run:
        flags = ()
    return run(command, given, *flags, *extra, "--json")


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
@pytest.mark.parametrize(
    ("status", "retry_exit", "resend_exit"),
    [
        ("draft", 2, 2),
        ("void", 2, 2),
        ("uncollectible", 0, 2),  # invoices.pay collects it; Stripe will not send it
        ("paid", 0, 0),  # nothing to do
    ],
)
def test_an_invoice_status_exits_alike_in_retry_and_resend_link(
    stripe: FakeStripe,
    seeded: Any,
    status: str,
    retry_exit: int,
    resend_exit: int,
    dry_run: bool,
) -> None:
    stripe.reply("GET", GET, invoice(status))
    stripe.reply("POST", PAY, invoice("paid"))

    retried = attempt("retry", "1", dry_run=dry_run)
    resent = attempt("resend-link", "1", dry_run=dry_run)

    assert (retried.exit_code, resent.exit_code) == (retry_exit, resend_exit), (
        retried.output + resent.output
    )
    for refused in (r for r in (retried, resent) if r.exit_code == 2):
        assert (error(refused)["code"], error(refused)["status"]) == (
            "invoice_not_actionable",
            status,
        )
    assert stripe.requests_to("POST", SEND) == []
    if dry_run:
        assert stripe.requests_to("POST", PAY) == []


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_an_invoice_stripe_does_not_have_exits_2_everywhere(
    stripe: FakeStripe, dry_run: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.test")
    missing = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
    stripe.reply("GET", f"/v1/invoices/{missing}", not_found("invoice", missing))

    codes = {cmd: attempt(cmd, missing, dry_run=dry_run) for cmd in ("retry", "resend-link")}
    codes["portal"] = attempt("portal", missing, dry_run=dry_run)

    assert {cmd: result.exit_code for cmd, result in codes.items()} == {
        "retry": 2,
        "resend-link": 2,
        "portal": 2,
    }
    assert {error(result)["message"] for result in codes.values()} == {
        f"no invoice {missing} in Stripe (test mode)"
    }


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_a_wrong_api_base_is_a_configuration_error_not_a_missing_invoice(
    fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    # The path of a server that is not Stripe's API: every route is "Unrecognized".
    fake_stripe.expect_unrecognized = True
    monkeypatch.setenv("STRIPE_SECRET_KEY", fake_stripe.api_key)
    monkeypatch.setenv("STRIPE_API_BASE", fake_stripe.url + "/stripe")
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.test")

    results = [
        attempt("retry", INVOICE_ID, dry_run=dry_run),
        attempt("resend-link", INVOICE_ID, dry_run=dry_run),
        attempt("portal", CUSTOMER_ID, dry_run=dry_run),
    ]

    for result in results:
        assert result.exit_code == 2, result.output
        body = error(result)
        assert body["code"] == "stripe_unrecognized_url"
        assert "Unrecognized request URL" in body["message"]
        assert "not a missing object" in body["message"]
        assert "STRIPE_API_BASE" in body["hint"]
        assert "no invoice" not in body["message"] and "no customer" not in body["message"]


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_paused_dunning_stops_retry_and_its_dry_run_alike(
    stripe: FakeStripe, seeded: Any, dry_run: bool
) -> None:
    seeded.put_setting(PAUSE_SETTING, {"paused": True, "reason": "Stripe incident"}, "ops", NOW)
    stripe.reply("GET", GET, invoice("open"))

    refused = attempt("retry", "1", dry_run=dry_run)
    forced = attempt("retry", "1", dry_run=True, extra=("--force",))

    assert (refused.exit_code, error(refused)["code"]) == (75, "dunning_paused")
    assert forced.exit_code == 0, forced.output
    assert stripe.requests_to("POST", PAY) == []


@pytest.mark.usefixtures("app_url")
def test_without_yes_every_action_that_reaches_a_customer_exits_3(
    stripe: FakeStripe, seeded: Any
) -> None:
    results = [run("retry", "1"), run("resend-link", "1"), run("portal", "1", "--send")]

    assert [result.exit_code for result in results] == [3, 3, 3]
    assert stripe.requests == []


@pytest.mark.usefixtures("app_url")
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_a_deleted_customer_exits_2_in_portal(
    stripe: FakeStripe, sqlite_env: str, dry_run: bool
) -> None:
    stripe.reply("GET", f"/v1/customers/{CUSTOMER_ID}", {"id": CUSTOMER_ID, "deleted": True})

    result = attempt(
        "portal", CUSTOMER_ID, dry_run=dry_run, extra=("--send",) + (() if dry_run else ("--yes",))
    )

    assert result.exit_code == 2, result.output
    assert error(result)["message"] == f"customer {CUSTOMER_ID} was deleted in Stripe (test mode)"
    assert stripe.requests_to("POST", SESSIONS) == []


@pytest.mark.usefixtures("app_url")
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_a_customer_without_email_exits_2_in_portal_send(
    stripe: FakeStripe, sqlite_env: str, dry_run: bool
) -> None:
    stripe.reply("GET", f"/v1/customers/{CUSTOMER_ID}", {**customer(), "email": None})

    result = attempt(
        "portal", CUSTOMER_ID, dry_run=dry_run, extra=("--send",) + (() if dry_run else ("--yes",))
    )

    assert (result.exit_code, error(result)["code"]) == (2, "no_email")
    assert stripe.requests_to("POST", SESSIONS) == []


@pytest.mark.usefixtures("app_url")
def test_a_dry_run_with_a_key_asks_stripe_whether_the_customer_exists(
    stripe: FakeStripe, seeded: Any
) -> None:
    # A real run learns this only when the session POST fails; the dry run finds out too.
    stripe.reply("GET", f"/v1/customers/{CUSTOMER_ID}", not_found("customer", CUSTOMER_ID))

    result = attempt("portal", CUSTOMER_ID, dry_run=True)

    assert result.exit_code == 2
    assert error(result)["message"] == f"no customer {CUSTOMER_ID} in Stripe (test mode)"


@pytest.fixture
def app_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.test")
