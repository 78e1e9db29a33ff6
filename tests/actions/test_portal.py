"""``portal``: a customer-portal link; ``--send`` emails it (real SMTP) and notes the alert."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from freezegun import freeze_time

from tests.actions.conftest import (
    CUSTOMER_ID,
    INVOICE_ID,
    MailSink,
    alert_notes,
    customer,
    data,
    error,
    invoice,
    portal_session,
    run,
    story,
)
from tests.stripe_fake import FakeStripe, Recorded, Reply, error_body

SESSIONS = "/v1/billing_portal/sessions"
RETURN_URL = "https://app.cloudgreet.test/admin/billing"
KEY = (
    f"cloudgreet-billing:portal:{CUSTOMER_ID}:2026-11-24T03:00:"
    + hashlib.sha256(RETURN_URL.encode()).hexdigest()[:12]
)
SESSION_URL = "https://billing.stripe.com/p/session/test_YWNjdF9zZWNyZXQ"


@pytest.fixture(autouse=True)
def on_a_known_minute() -> Iterator[None]:
    with freeze_time("2026-11-24 03:00:00", tick=True):
        yield


@pytest.fixture
def app_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.test")


def session_reply(request: Recorded) -> Reply:
    return Reply(200, portal_session(request.form["return_url"]))


@pytest.mark.usefixtures("app_url")
@pytest.mark.parametrize("given", ["1", INVOICE_ID, CUSTOMER_ID])
def test_portal_makes_a_link_returning_to_admin_billing(
    stripe: FakeStripe, seeded: Any, given: str
) -> None:
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", given, "--json")

    assert result.exit_code == 0, result.output
    assert data(result) == {
        "customer_id": CUSTOMER_ID,
        "url": SESSION_URL,
        "return_url": RETURN_URL,
        "sent": False,
        "outcome": "created",
        "email_to": None,
    }
    [create] = stripe.requests_to("POST", SESSIONS)
    assert create.form == {"customer": CUSTOMER_ID, "return_url": RETURN_URL}
    assert create.idempotency_key == KEY
    assert story(seeded, CUSTOMER_ID) == [("portal", "intent", KEY), ("portal", "created", KEY)]
    # The link opens the customer's billing account: it never enters the audit log.
    assert all(SESSION_URL not in str(line.details) for line in seeded.audit_trail(CUSTOMER_ID))


def test_human_output_is_the_url_alone(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.test")
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", CUSTOMER_ID)

    assert result.exit_code == 0, result.output
    assert result.stdout == SESSION_URL + "\n"


def test_return_url_falls_back_to_next_public_app_url(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXT_PUBLIC_APP_URL", "https://next.cloudgreet.test/")
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", CUSTOMER_ID, "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["return_url"] == "https://next.cloudgreet.test/admin/billing"


@pytest.mark.usefixtures("app_url")
def test_return_url_override(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", CUSTOMER_ID, "--return-url", "https://x.test/back", "--json")

    assert result.exit_code == 0, result.output
    assert stripe.requests_to("POST", SESSIONS)[0].form["return_url"] == "https://x.test/back"


def test_without_app_url_it_says_what_to_set(stripe: FakeStripe, seeded: Any) -> None:
    result = run("portal", CUSTOMER_ID)

    assert result.exit_code == 2
    assert "APP_URL is not set" in result.stderr
    assert "--return-url" in result.stderr
    assert stripe.requests == []


@pytest.mark.usefixtures("app_url")
def test_send_emails_the_link_and_notes_the_alert(
    stripe: FakeStripe, seeded: Any, smtp: MailSink
) -> None:
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", "1", "--send", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert data(result) == {
        "customer_id": CUSTOMER_ID,
        "url": SESSION_URL,
        "return_url": RETURN_URL,
        "sent": True,
        "outcome": "sent",
        "email_to": "ap@acme-dental.test",
    }
    assert "Stripe test mode · account acct_1TestCloudGreet" in result.stderr
    [(recipients, message)] = smtp.messages
    assert recipients == ["ap@acme-dental.test"]
    assert SESSION_URL in message.get_content()
    assert "CG-0042" in message.get_content()
    assert alert_notes(seeded, 1) == [("tester@ci", "portal link sent; follow up in CRM")]
    assert story(seeded, CUSTOMER_ID) == [("portal", "intent", KEY), ("portal", "sent", KEY)]
    sent = seeded.audit_trail(CUSTOMER_ID)[-1]
    assert sent.details["email_to"] == "ap@acme-dental.test"
    assert sent.details["email_backend"] == "smtp"
    assert SESSION_URL not in str(sent.details)
    assert [line.outcome for line in seeded.audit_trail("alert:1")] == ["noted"]


@pytest.mark.usefixtures("app_url")
def test_send_twice_the_same_day_emails_once(
    stripe: FakeStripe, seeded: Any, smtp: MailSink
) -> None:
    stripe.reply("POST", SESSIONS, session_reply)

    first = run("portal", "1", "--send", "--yes", "--json")
    second = run("portal", "1", "--send", "--yes", "--json")

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert data(second)["sent"] is False
    assert len(smtp.messages) == 1
    assert len(stripe.requests_to("POST", SESSIONS)) == 1
    assert [outcome for _, outcome, _ in story(seeded, CUSTOMER_ID)] == [
        "intent",
        "sent",
        "already_sent",
    ]


@pytest.mark.usefixtures("app_url")
def test_send_looks_up_the_email_in_stripe_when_not_mirrored(
    stripe: FakeStripe, sqlite_env: str, smtp: MailSink
) -> None:
    stripe.reply("GET", f"/v1/customers/{CUSTOMER_ID}", customer())
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", CUSTOMER_ID, "--send", "--yes")

    assert result.exit_code == 0, result.output
    assert smtp.messages[0][0] == ["ap@acme-dental.test"]


@pytest.mark.usefixtures("app_url")
def test_send_needs_yes_when_not_interactive(
    stripe: FakeStripe, seeded: Any, smtp: MailSink
) -> None:
    result = run("portal", "1", "--send")

    assert result.exit_code == 3
    assert stripe.requests == []
    assert smtp.messages == []
    assert story(seeded, CUSTOMER_ID) == [("portal", "refused", None)]


@pytest.mark.usefixtures("app_url")
def test_send_prompt_shows_customer_invoice_and_amount(
    stripe: FakeStripe, seeded: Any, smtp: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)

    result = run("portal", "1", "--send", input="n\n")

    assert result.exit_code == 3
    assert "Acme Dental · ap@acme-dental.test" in result.stderr
    assert f"invoice:  {INVOICE_ID}" in result.stderr
    assert "amount:   $120.00" in result.stderr
    assert "Email a billing-portal link to ap@acme-dental.test?" in result.stderr
    assert stripe.requests_to("POST", SESSIONS) == []
    assert smtp.messages == []


@pytest.mark.usefixtures("app_url")
def test_send_dry_run_sends_nothing(stripe: FakeStripe, seeded: Any, smtp: MailSink) -> None:
    stripe.reply("GET", f"/v1/customers/{CUSTOMER_ID}", customer())

    result = run("portal", "1", "--send", "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["request"] == {
        "method": "POST",
        "path": SESSIONS,
        "params": {"customer": CUSTOMER_ID, "return_url": RETURN_URL},
        "idempotency_key": KEY,
    }
    # It reads the account and the customer, as checks; it creates no session.
    assert [(r.method, r.path) for r in stripe.requests] == [
        ("GET", "/v1/account"),
        ("GET", f"/v1/customers/{CUSTOMER_ID}"),
    ]
    assert smtp.messages == []
    assert story(seeded, CUSTOMER_ID) == [("portal", "dry_run", KEY)]


@pytest.mark.usefixtures("app_url")
def test_failed_delivery_exits_1_and_is_audited(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.stripe_fake import unused_port

    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{unused_port()}")
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", "1", "--send", "--yes")

    assert result.exit_code == 1
    assert "not emailed to ap@acme-dental.test" in result.stderr
    assert alert_notes(seeded, 1) == []
    assert [outcome for _, outcome, _ in story(seeded, CUSTOMER_ID)] == ["intent", "failed"]


@pytest.mark.usefixtures("app_url")
def test_unknown_customer_is_named(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply(
        "POST",
        SESSIONS,
        Reply(
            400,
            error_body("No such customer: 'cus_nobody'", code="resource_missing", param="customer"),
        ),
    )

    result = run("portal", "cus_nobody", "--json")

    assert result.exit_code == 2
    assert error(result)["message"] == "no customer cus_nobody in Stripe (test mode)"
    assert [outcome for _, outcome, _ in story(seeded, "cus_nobody")] == ["intent", "failed"]


def test_an_unrecognised_id_exits_2(stripe: FakeStripe, seeded: Any) -> None:
    result = run("portal", "sub_123")

    assert result.exit_code == 2
    assert "or a customer id (cus_…)" in result.stderr


def test_an_unknown_invoice_is_named(stripe: FakeStripe, seeded: Any, app_url: None) -> None:
    from tests.stripe_fake import not_found

    stripe.reply("GET", "/v1/invoices/in_nope", not_found("invoice", "in_nope"))

    result = run("portal", "in_nope")

    assert result.exit_code == 2
    assert "no invoice in_nope in Stripe (test mode)" in result.stderr


def test_invoice_is_read_from_stripe_when_not_mirrored(
    stripe: FakeStripe, sqlite_env: str, app_url: None
) -> None:
    stripe.reply("GET", f"/v1/invoices/{INVOICE_ID}", invoice("open"))
    stripe.reply("POST", SESSIONS, session_reply)

    result = run("portal", INVOICE_ID, "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["customer_id"] == CUSTOMER_ID


def test_another_return_url_in_the_same_minute_is_another_session():
    from datetime import UTC, datetime

    from cloudgreet_billing.services.actions.portal import session_key

    now = datetime(2026, 11, 24, 3, 0, 30, tzinfo=UTC)
    assert session_key(CUSTOMER_ID, RETURN_URL, now) == KEY
    assert session_key(CUSTOMER_ID, "https://app.cloudgreet.test/other", now) != KEY
