"""Delivery failures as the on-call engineer meets them: a refused SMTP login, and Twilio,
through the adapters and through `dunning run` against real local servers."""

from __future__ import annotations

import base64
import functools
import gc
import json
import warnings
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner, Result

from cloudgreet_billing.adapters.notify.email_smtp import SmtpEmailSender
from cloudgreet_billing.adapters.notify.protocol import DeliveryError, OutgoingEmail
from cloudgreet_billing.cli import app
from tests.dunning.conftest import (
    T0,
    HttpCall,
    HttpStub,
    LoginSmtp,
    assert_nothing_secret,
    run_counts,
    schedule,
    seed_invoice,
)

runner = CliRunner()

#: A wrong password with a character that must be percent-encoded in SMTP_URL.
WRONG_PASSWORD = "hunter2@wrong-battery"
EMAIL = OutgoingEmail(to="ada@example.com", subject="Payment failed", body="Hi Ada,\n", step_id=1)


def wrong_smtp_url(server: LoginSmtp) -> str:
    return f"smtp://{server.login}:{quote(WRONG_PASSWORD, safe='')}@127.0.0.1:{server.port}"


def refused(server: LoginSmtp) -> str:
    return f"SMTP server 127.0.0.1:{server.port} refused the login (535)"


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def run_summary(errors: list[dict[str, Any]] | None = None, **counts: Any) -> dict[str, Any]:
    return {**run_counts(**counts), "errors": errors or []}


def data_of(result: Result) -> dict[str, Any]:
    """The ``data`` of a JSON run, with its random ``run_id`` checked and set aside."""
    data: dict[str, Any] = json.loads(result.stdout)["data"]
    run_id = data.pop("run_id")
    assert isinstance(run_id, str) and run_id
    return data


def steps_of(invoice_id: str) -> list[dict[str, Any]]:
    result = cli("dunning", "list", "--invoice", invoice_id, "--json")
    assert result.exit_code == 0, result.output
    steps: list[dict[str, Any]] = json.loads(result.stdout)["data"]
    return steps


# --- a refused SMTP login -----------------------------------------------------------


def _send_refused(server: LoginSmtp) -> str:
    sender = SmtpEmailSender(wrong_smtp_url(server), "billing@cloudgreet.test")
    with pytest.raises(DeliveryError) as caught:
        sender.send(EMAIL)
    return str(caught.value)


def test_a_refused_smtp_login_names_the_stage_and_code_never_the_password(
    smtp_login_server: LoginSmtp,
) -> None:
    message = _send_refused(smtp_login_server)
    assert message == refused(smtp_login_server)
    assert WRONG_PASSWORD not in message and quote(WRONG_PASSWORD, safe="") not in message
    # The server was offered exactly the URL's (decoded) credentials, and took no mail.
    assert set(smtp_login_server.attempts) == {("mailer", WRONG_PASSWORD)}
    assert smtp_login_server.sink.received == []


def test_a_refused_smtp_login_closes_the_connection(smtp_login_server: LoginSmtp) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        _send_refused(smtp_login_server)
        gc.collect()
    to_server = f"raddr=('127.0.0.1', {smtp_login_server.port})"
    leaked = [str(w.message) for w in seen if to_server in str(w.message)]
    assert leaked == []


def test_after_a_refused_login_the_sender_does_not_log_in_again(
    smtp_login_server: LoginSmtp,
) -> None:
    sender = SmtpEmailSender(wrong_smtp_url(smtp_login_server), "billing@cloudgreet.test")
    for _ in range(3):
        with pytest.raises(DeliveryError, match=r"refused the login \(535\)"):
            sender.send(EMAIL)
    sender.close()
    # One connection, one login (smtplib tries each offered mechanism once), then no more:
    # a login retried for every message gets accounts and hosts locked out.
    assert smtp_login_server.sink.sessions == 1
    assert len(smtp_login_server.attempts) == 2


@pytest.fixture
def refused_smtp(
    store_env: str, smtp_login_server: LoginSmtp, monkeypatch: pytest.MonkeyPatch
) -> LoginSmtp:
    """``dunning run`` configured for an SMTP server that refuses SMTP_URL's password."""
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("SMTP_URL", wrong_smtp_url(smtp_login_server))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    return smtp_login_server


def test_dunning_run_records_a_refused_smtp_login_and_exits_4(
    store: Any, refused_smtp: LoginSmtp
) -> None:
    seed_invoice(store)
    schedule(store)
    seed_invoice(store, "in_2", "cus_2", email="grace@example.com")
    schedule(store, "in_2", "cus_2")
    with freeze_time(T0 + timedelta(minutes=5)):
        result = cli("dunning", "run", "--json")
        [day0_1, *_] = steps_of("in_1")
        [day0_2, *_] = steps_of("in_2")

    assert result.exit_code == 4, result.output
    error = refused(refused_smtp)
    assert data_of(result) == run_summary(
        due=2,
        failed=2,
        errors=[
            {"step_id": day0_1["id"], "error": error},
            {"step_id": day0_2["id"], "error": error},
        ],
    )
    for step in (day0_1, day0_2):
        assert (step["status"], step["last_error"], step["attempts"]) == ("failed", error, 1)
        assert step["sent_at"] is None
    assert refused_smtp.sink.received == []
    assert refused_smtp.sink.sessions == 1  # one refused login for the run, not one per email
    assert_nothing_secret(result, WRONG_PASSWORD, quote(WRONG_PASSWORD, safe=""))


def test_dunning_run_tells_a_person_which_step_the_refused_login_failed(
    store: Any, refused_smtp: LoginSmtp
) -> None:
    seed_invoice(store)
    schedule(store)
    with freeze_time(T0 + timedelta(minutes=5)):
        result = cli("dunning", "run")
        [day0, *_] = steps_of("in_1")

    assert result.exit_code == 4
    assert "1 due: 0 sent, 0 skipped, 1 failed" in result.stdout
    assert f"step {day0['id']}: {refused(refused_smtp)}" in result.stdout
    assert_nothing_secret(result, WRONG_PASSWORD, quote(WRONG_PASSWORD, safe=""))


# --- Twilio through the CLI ----------------------------------------------------------

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f00dfeedcafe" + "5ec7e7" * 3
TWILIO_FROM = "+15550199"
MESSAGE_SID = "SM" + "fedcba9876543210" * 2


class LocalTwilio:
    """A local Twilio Messages API; ``answer`` is what it says to each POST."""

    def __init__(self, make_stub: Any, answer: tuple[int, dict[str, Any]]) -> None:
        status, body = answer
        self.stub: HttpStub = make_stub(
            lambda call: (status, "application/json", json.dumps(body).encode())
        )

    @property
    def calls(self) -> list[HttpCall]:
        return self.stub.calls


@pytest.fixture
def twilio_env(store_env: str, http_stub: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Configure the Twilio backend with the contract's variables, pointed at a local server.

    The settings have no API-host variable for Twilio, so the one seam is the one the
    adapter tests use: the sender's ``api_base``, given where bootstrap builds it.
    """
    from cloudgreet_billing.adapters.notify import sms_twilio

    monkeypatch.setenv("BILLING_SMS_BACKEND", "twilio")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_FROM", TWILIO_FROM)

    def start(status: int, body: dict[str, Any]) -> LocalTwilio:
        twilio = LocalTwilio(http_stub, (status, body))
        local = functools.partial(sms_twilio.TwilioSmsSender, api_base=twilio.stub.url)
        monkeypatch.setattr(sms_twilio, "TwilioSmsSender", local)
        return twilio

    return start


def seed_due_sms(store: Any) -> None:
    """At T0 + 1 day the day-1 SMS is due (and the day-0 email superseded by it)."""
    seed_invoice(store, phone="+15550100")
    schedule(store)


def test_dunning_run_sends_the_due_sms_through_twilio(store: Any, twilio_env: Any) -> None:
    twilio = twilio_env(
        201, {"sid": MESSAGE_SID, "status": "queued", "to": "+15550100", "from": TWILIO_FROM}
    )
    seed_due_sms(store)
    with freeze_time(T0 + timedelta(days=1, minutes=1)):
        result = cli("dunning", "run", "--json")
        steps = steps_of("in_1")

    assert result.exit_code == 0, result.output
    assert data_of(result) == run_summary(due=2, sent=1, skipped=1)
    [call] = twilio.calls
    assert call.method == "POST"
    assert call.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert call.headers["Authorization"] == f"Basic {basic}"
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(call.body.decode(), strict_parsing=True)
    assert set(form) == {"To", "From", "Body"}
    assert (form["To"], form["From"]) == (["+15550100"], [TWILIO_FROM])
    [body] = form["Body"]
    assert "https://invoice.stripe.com/i/test_1" in body  # the pay link reaches the customer
    sms_step = next(step for step in steps if step["channel"] == "sms")
    assert sms_step["status"] == "sent"
    assert sms_step["provider_message_id"] == MESSAGE_SID
    assert sms_step["sent_at"] == "2026-03-03T09:01:00Z"
    assert (sms_step["attempts"], sms_step["last_error"]) == (1, None)
    assert_nothing_secret(result, AUTH_TOKEN, basic)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, 21211, "The 'To' number +15550100 is not a valid phone number."),
        (401, 20003, "Authenticate"),
    ],
    ids=["bad-number", "bad-token"],
)
def test_a_twilio_refusal_fails_the_step_with_twilios_message_and_exits_4(
    store: Any, twilio_env: Any, status: int, code: int, message: str
) -> None:
    twilio = twilio_env(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )
    seed_due_sms(store)
    with freeze_time(T0 + timedelta(days=1, minutes=1)):
        result = cli("dunning", "run", "--json")
        steps = steps_of("in_1")

    assert result.exit_code == 4, result.output
    sms_step = next(step for step in steps if step["channel"] == "sms")
    error = f"Twilio refused the SMS to +15550100: HTTP {status}: {message} (Twilio error {code})"
    assert data_of(result) == run_summary(
        due=2, skipped=1, failed=1, errors=[{"step_id": sms_step["id"], "error": error}]
    )
    assert (sms_step["status"], sms_step["last_error"]) == ("failed", error)
    assert (sms_step["provider_message_id"], sms_step["sent_at"]) == (None, None)
    assert len(twilio.calls) == 1
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert_nothing_secret(result, AUTH_TOKEN, basic)
