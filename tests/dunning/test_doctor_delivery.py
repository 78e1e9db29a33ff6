"""``doctor`` proves the delivery credentials work, against real local servers: an SMTP
login (aiosmtpd on 127.0.0.1) and a Twilio account read (a local HTTP server), so a wrong
password or token shows up before the first ``dunning run`` and never in the output."""

from __future__ import annotations

import base64
import functools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner, Result

from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.cli import app
from cloudgreet_billing.config import load_settings
from tests.dunning.conftest import (
    HttpCall,
    HttpStub,
    LoginSmtp,
    SmtpSink,
    assert_nothing_secret,
    serving,
)
from tests.pg_cluster import free_port

runner = CliRunner()

EMAIL_FROM = "billing@cloudgreet.test"
#: A wrong password with a character that must be percent-encoded in SMTP_URL.
WRONG_PASSWORD = "hunter2@wrong-battery"

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f00dfeedcafe" + "5ec7e7" * 3
BASIC = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
ACCOUNT_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}.json"


@pytest.fixture(autouse=True)
def ready_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migrated SQLite store, so only the delivery checks can fail ``doctor``."""
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path}/billing.db")
    store = open_store(load_settings(), check_schema=False)
    store.migrate()
    store.close()


def doctor(*args: str) -> Result:
    return runner.invoke(app, ["doctor", *args], catch_exceptions=False)


def check(result: Result, name: str) -> dict[str, str]:
    [found] = [c for c in json.loads(result.stdout)["data"]["checks"] if c["name"] == name]
    return found


def assert_doctor_fails(name: str, detail: str, *secrets: str) -> None:
    """``doctor`` exits 1 with ``name`` failing with ``detail``, in JSON and in human
    output, and neither shows any of ``secrets``."""
    as_json = doctor("--json")
    as_text = doctor()
    assert (as_json.exit_code, as_text.exit_code) == (1, 1)
    assert json.loads(as_json.stdout)["data"]["ok"] is False
    assert check(as_json, name) == {"name": name, "status": "fail", "detail": detail}
    assert f"✗ {name}: fail — {detail}\n" in as_text.stdout
    for result in (as_json, as_text):
        assert_nothing_secret(result, *secrets)


def test_console_backends_reach_nothing_and_pass() -> None:
    result = doctor("--json")

    assert result.exit_code == 0, result.output
    assert check(result, "email") == {"name": "email", "status": "ok", "detail": "console backend"}
    assert check(result, "sms") == {"name": "sms", "status": "ok", "detail": "console backend"}


# --- SMTP ----------------------------------------------------------------------------


def use_smtp(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("SMTP_URL", url)
    monkeypatch.setenv("EMAIL_FROM", EMAIL_FROM)


def test_an_accepted_smtp_login_passes_and_sends_nothing(
    smtp_login_server: LoginSmtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_login_server
    use_smtp(monkeypatch, f"smtp://{server.login}:{server.password}@127.0.0.1:{server.port}")

    result = doctor("--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"]["ok"] is True
    assert check(result, "email") == {
        "name": "email",
        "status": "ok",
        "detail": f"smtp backend, 127.0.0.1:{server.port} accepted the login as mailer",
    }
    assert server.attempts == [("mailer", server.password)]
    assert server.sink.sessions == 1
    assert server.sink.received == []
    assert_nothing_secret(result, server.password)


def test_a_refused_smtp_login_fails_doctor_with_the_code_and_a_hint_never_the_password(
    smtp_login_server: LoginSmtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_login_server
    encoded = quote(WRONG_PASSWORD, safe="")
    use_smtp(monkeypatch, f"smtp://{server.login}:{encoded}@127.0.0.1:{server.port}")
    detail = (
        f"smtp backend: SMTP server 127.0.0.1:{server.port} refused the login (535); "
        "check SMTP_URL's user and password"
    )

    assert_doctor_fails("email", detail, WRONG_PASSWORD, encoded, "wrong-battery")
    # The server was offered the URL's decoded password (so the check is real) and no mail.
    assert ("mailer", WRONG_PASSWORD) in server.attempts
    assert server.sink.received == []


def test_an_smtp_server_without_login_accepts_the_sender(
    smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_smtp(monkeypatch, f"smtp://127.0.0.1:{smtp_server.port}")

    result = doctor("--json")

    assert result.exit_code == 0, result.output
    assert check(result, "email")["detail"] == (
        f"smtp backend, 127.0.0.1:{smtp_server.port} accepts mail from {EMAIL_FROM} "
        "(no login configured)"
    )
    assert smtp_server.sessions == 1
    assert smtp_server.received == []


class RefusingSender(SmtpSink):
    """A relay that wants a login before it takes mail from anyone."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return "530 5.7.0 Authentication required"


@pytest.fixture
def refusing_sender() -> Iterator[SmtpSink]:
    with serving(RefusingSender()) as sink:
        yield sink


def test_an_smtp_server_refusing_the_sender_fails_doctor(
    refusing_sender: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_smtp(monkeypatch, f"smtp://127.0.0.1:{refusing_sender.port}")

    result = doctor("--json")

    assert result.exit_code == 1
    assert check(result, "email") == {
        "name": "email",
        "status": "fail",
        "detail": f"smtp backend: SMTP server 127.0.0.1:{refusing_sender.port} refused the "
        f"sender {EMAIL_FROM}: 530 5.7.0 Authentication required; check EMAIL_FROM, and "
        "whether the server needs a user and password in SMTP_URL",
    }


def test_an_unreachable_smtp_server_fails_doctor_naming_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()  # nothing listens there
    use_smtp(monkeypatch, f"smtp://mailer:{quote(WRONG_PASSWORD, safe='')}@127.0.0.1:{port}")

    result = doctor("--json")

    assert result.exit_code == 1
    detail = check(result, "email")["detail"]
    assert detail.startswith(f"smtp backend: cannot reach SMTP server 127.0.0.1:{port}: ")
    assert detail.endswith(
        "; check SMTP_URL's host, port and scheme (smtp:// STARTTLS, smtps:// TLS)"
    )
    assert_nothing_secret(result, WRONG_PASSWORD)


def test_a_silent_smtp_server_fails_doctor_after_doctors_own_short_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloudgreet_billing.adapters.notify import email_smtp
    from cloudgreet_billing.services import doctor as doctor_service

    built: list[float] = []

    class Recording(email_smtp.SmtpEmailSender):
        def __init__(self, url: str, sender: str, *, timeout: float = 30.0) -> None:
            built.append(timeout)
            super().__init__(url, sender, timeout=timeout)

    monkeypatch.setattr(email_smtp, "SmtpEmailSender", Recording)
    monkeypatch.setattr(doctor_service, "DELIVERY_CHECK_TIMEOUT", 0.2)
    with socket.socket() as silent:  # takes the connection, never says hello
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        use_smtp(monkeypatch, f"smtp://127.0.0.1:{port}")

        result = doctor("--json")

    assert result.exit_code == 1
    assert built == [0.2]
    assert check(result, "email")["detail"] == (
        f"smtp backend: cannot reach SMTP server 127.0.0.1:{port}: Connection unexpectedly "
        "closed: timed out; check SMTP_URL's host, port and scheme (smtp:// STARTTLS, smtps:// TLS)"
    )


# --- Twilio --------------------------------------------------------------------------


def twilio_account(status: str = "active", kind: str = "Full") -> dict[str, Any]:
    """The fields of Twilio's Account resource that matter here, shaped as Twilio's."""
    return {
        "sid": ACCOUNT_SID,
        "owner_account_sid": ACCOUNT_SID,
        "friendly_name": "CloudGreet Billing",
        "status": status,
        "type": kind,
        "auth_token": None,
        "uri": ACCOUNT_PATH,
    }


class LocalTwilio:
    """A local Twilio that checks each request is the account read, with Basic auth."""

    def __init__(self, make_stub: Any, status: int, body: dict[str, Any]) -> None:
        self.answer = (status, body)
        self.stub: HttpStub = make_stub(self.respond)

    def respond(self, call: HttpCall) -> tuple[int, str, bytes]:
        status, body = self.answer
        return status, "application/json", json.dumps(body).encode()

    def assert_one_account_read(self) -> None:
        [call] = self.stub.calls
        assert (call.method, call.path) == ("GET", ACCOUNT_PATH)
        assert call.headers["Authorization"] == BASIC
        assert call.body == b""


@pytest.fixture
def twilio(http_stub: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Configure the Twilio backend and point its sender at a local server: the settings
    have no Twilio host variable, so the seam is the sender's ``api_base``, as in
    test_delivery_cli.py."""
    from cloudgreet_billing.adapters.notify import sms_twilio

    monkeypatch.setenv("BILLING_SMS_BACKEND", "twilio")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_FROM", "+15550199")

    def start(status: int, body: dict[str, Any]) -> LocalTwilio:
        local = LocalTwilio(http_stub, status, body)
        sender = functools.partial(sms_twilio.TwilioSmsSender, api_base=local.stub.url)
        monkeypatch.setattr(sms_twilio, "TwilioSmsSender", sender)
        return local

    return start


def test_a_working_twilio_account_passes_with_its_name(twilio: Any) -> None:
    local = twilio(200, twilio_account())

    result = doctor("--json")

    assert result.exit_code == 0, result.output
    assert check(result, "sms") == {
        "name": "sms",
        "status": "ok",
        "detail": f"twilio backend, account {ACCOUNT_SID} (CloudGreet Billing, active)",
    }
    local.assert_one_account_read()  # and no message sent
    assert_nothing_secret(result, AUTH_TOKEN, BASIC)


@pytest.mark.parametrize(
    ("status", "code", "message", "detail"),
    [
        (401, 20003, "Authenticate", "Your AccountSid or AuthToken was incorrect."),
        (404, 20404, f"The requested resource {ACCOUNT_PATH} was not found", None),
    ],
    ids=["bad-token", "unknown-sid"],
)
def test_refused_twilio_credentials_fail_doctor_with_twilios_error_never_the_token(
    twilio: Any, status: int, code: int, message: str, detail: str | None
) -> None:
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    if detail:
        error["detail"] = detail
    local = twilio(status, error)
    said = f"{message}: {detail}" if detail else message
    expected = (
        f"twilio backend: Twilio refused account {ACCOUNT_SID}: HTTP {status}: {said} "
        f"(Twilio error {code}); check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
    )

    assert_doctor_fails("sms", expected, AUTH_TOKEN, BASIC, BASIC.removeprefix("Basic "))
    assert len(local.stub.calls) == 2
    assert all(call.method == "GET" for call in local.stub.calls)


@pytest.mark.parametrize("status", ["suspended", "closed"])
def test_a_suspended_or_closed_twilio_account_fails_doctor(twilio: Any, status: str) -> None:
    local = twilio(200, twilio_account(status=status))

    result = doctor("--json")

    assert result.exit_code == 1
    assert check(result, "sms") == {
        "name": "sms",
        "status": "fail",
        "detail": f"twilio backend, account {ACCOUNT_SID} (CloudGreet Billing, {status}): "
        f"a {status} account cannot send; see Twilio's console",
    }
    local.assert_one_account_read()


def test_a_twilio_trial_account_is_a_warning_not_a_failure(twilio: Any) -> None:
    local = twilio(200, twilio_account(kind="Trial"))

    result = doctor("--json")

    assert result.exit_code == 0, result.output
    assert check(result, "sms") == {
        "name": "sms",
        "status": "warn",
        "detail": f"twilio backend, account {ACCOUNT_SID} (CloudGreet Billing, active): "
        "a trial account texts only verified numbers",
    }
    local.assert_one_account_read()


def test_twilio_failing_is_not_blamed_on_the_credentials(twilio: Any) -> None:
    twilio(503, {"code": 20503, "message": "Service Unavailable", "status": 503})

    result = doctor("--json")

    assert result.exit_code == 1
    assert check(result, "sms")["detail"] == (
        f"twilio backend: Twilio refused account {ACCOUNT_SID}: HTTP 503: Service Unavailable "
        "(Twilio error 20503); Twilio may be having trouble; try again later"
    )


def test_unreachable_twilio_fails_doctor_with_a_network_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloudgreet_billing.adapters.notify import sms_twilio

    monkeypatch.setenv("BILLING_SMS_BACKEND", "twilio")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_FROM", "+15550199")
    nowhere = f"http://127.0.0.1:{free_port()}"
    sender = functools.partial(sms_twilio.TwilioSmsSender, api_base=nowhere)
    monkeypatch.setattr(sms_twilio, "TwilioSmsSender", sender)

    result = doctor("--json")

    assert result.exit_code == 1
    detail = check(result, "sms")["detail"]
    assert detail.startswith("twilio backend: cannot reach Twilio: ")
    assert detail.endswith("; check this machine's network access to Twilio")
    assert_nothing_secret(result, AUTH_TOKEN)
