"""Delivery adapters against real counterparts: aiosmtpd, and local Twilio/Slack servers."""

from __future__ import annotations

import base64
import io
import json
import socket
from email import message_from_bytes
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from cloudgreet_billing.adapters.notify.email_console import ConsoleEmailSender
from cloudgreet_billing.adapters.notify.email_file import FileEmailSender
from cloudgreet_billing.adapters.notify.email_smtp import SmtpEmailSender
from cloudgreet_billing.adapters.notify.protocol import DeliveryError, OutgoingEmail, OutgoingSms
from cloudgreet_billing.adapters.notify.slack import SlackWebhook
from cloudgreet_billing.adapters.notify.sms_console import ConsoleSmsSender
from cloudgreet_billing.adapters.notify.sms_file import FileSmsSender
from cloudgreet_billing.adapters.notify.sms_twilio import TwilioSmsSender
from tests.dunning.conftest import HttpCall, SmtpSink
from tests.pg_cluster import free_port

EMAIL = OutgoingEmail(
    to="ada@example.com", subject="Payment failed — CG-0001", body="Hi Ada,\n", step_id=7
)


def test_smtp_reuses_one_connection_for_every_message(smtp_server: SmtpSink) -> None:
    sender = SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test")
    ids = [
        sender.send(OutgoingEmail(to=f"c{n}@example.com", subject="s", body="b", step_id=n))
        for n in range(3)
    ]
    sender.close()
    assert smtp_server.sessions == 1
    assert [r.step_id for r in smtp_server.received] == [0, 1, 2]
    assert [r.message["Message-ID"].strip("<>") for r in smtp_server.received] == ids
    first = smtp_server.received[0].message
    assert (first["From"], first["To"]) == ("billing@cloudgreet.test", "c0@example.com")


def test_smtp_sends_utf8_subjects_and_bodies(smtp_server: SmtpSink) -> None:
    sender = SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test")
    sender.send(EMAIL)
    sender.close()
    from email.header import decode_header, make_header

    message = smtp_server.received[0].message
    assert str(make_header(decode_header(message["Subject"]))) == "Payment failed — CG-0001"
    assert message.get_payload(decode=True).decode() == "Hi Ada,\r\n"


def test_smtp_reconnects_after_the_server_drops_an_idle_connection(
    smtp_server: SmtpSink,
) -> None:
    sender = SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test")
    sender.send(EMAIL)
    assert sender._connection is not None
    sender._connection.sock.shutdown(socket.SHUT_RDWR)  # as when the server drops it
    sender.send(EMAIL)
    sender.close()
    assert len(smtp_server.received) == 2
    assert smtp_server.sessions == 2


def test_smtp_refusals_name_the_stage_and_code(smtp_server: SmtpSink) -> None:
    async def refuse(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    smtp_server.handle_RCPT = refuse  # type: ignore[attr-defined]
    sender = SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test")
    with pytest.raises(DeliveryError, match=r"refused the recipient gone@example.com: 550"):
        sender.send(OutgoingEmail(to="gone@example.com", subject="s", body="b"))
    sender.send(EMAIL)  # the connection is still good
    sender.close()
    assert [r.rcpt for r in smtp_server.received] == ["ada@example.com"]


def test_smtp_logs_in_with_the_url_credentials() -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    seen: list[tuple[str, str]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        seen.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"s3cr@t")

    sink = SmtpSink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        sender = SmtpEmailSender(
            f"smtp://mailer:s3cr%40t@127.0.0.1:{port}", "billing@cloudgreet.test"
        )
        sender.send(EMAIL)
        sender.close()
    finally:
        controller.stop()
    assert seen[0] == ("mailer", "s3cr@t")
    assert len(sink.received) == 1


def test_smtp_to_nowhere_is_a_delivery_error() -> None:
    sender = SmtpEmailSender(f"smtp://127.0.0.1:{free_port()}", "billing@cloudgreet.test")
    with pytest.raises(DeliveryError, match="cannot reach SMTP server"):
        sender.send(EMAIL)


def test_file_email_is_one_rfc5322_message_per_file(tmp_path: Path) -> None:
    sender = FileEmailSender(tmp_path / "outbox", "billing@cloudgreet.test")
    name = sender.send(EMAIL)
    [path] = (tmp_path / "outbox").iterdir()
    assert path.name == name and name.endswith(".eml")
    raw = path.read_bytes()
    assert b"\r\n" in raw  # RFC 5322 line endings
    message = message_from_bytes(raw)
    assert (message["To"], message["X-CloudGreet-Dunning-Step"]) == ("ada@example.com", "7")
    assert message["Message-ID"] and message["Date"]


def test_file_sms_is_one_json_per_message(tmp_path: Path) -> None:
    sender = FileSmsSender(tmp_path, "+15550199")
    name = sender.send(OutgoingSms(to="+15550100", body="pay me", step_id=3))
    record = json.loads((tmp_path / name).read_text())
    assert name.endswith(".sms.json")
    assert {k: record[k] for k in ("to", "from", "body", "step_id")} == {
        "to": "+15550100",
        "from": "+15550199",
        "body": "pay me",
        "step_id": 3,
    }


def test_console_backends_write_to_their_stream() -> None:
    stream = io.StringIO()
    assert ConsoleEmailSender(stream, "billing@cloudgreet.test").send(EMAIL) is None
    assert ConsoleSmsSender(stream).send(OutgoingSms(to="+1555", body="hello", step_id=1)) is None
    text = stream.getvalue()
    assert "To: ada@example.com" in text and "Subject: Payment failed — CG-0001" in text
    assert "sms (dunning step 1) to +1555\nhello" in text


def twilio_answer(call: HttpCall) -> tuple[int, str, bytes]:
    assert call.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert call.headers["Authorization"] == "Basic " + base64.b64encode(b"AC123:tok").decode()
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = {key: values[0] for key, values in parse_qs(call.body.decode()).items()}
    assert form["From"] == "+15550199"
    if form["To"] == "+1bad":
        error = {"code": 21211, "message": "The 'To' number +1bad is not a valid phone number."}
        return 400, "application/json", json.dumps(error).encode()
    return 201, "application/json", json.dumps({"sid": "SM0001", "to": form["To"]}).encode()


def test_twilio_posts_the_message_and_returns_its_sid(http_stub: Any) -> None:
    twilio = http_stub(twilio_answer)
    sender = TwilioSmsSender("AC123", "tok", "+15550199", api_base=twilio.url)
    assert sender.send(OutgoingSms(to="+15550100", body="Pay here: https://x", step_id=1)) == (
        "SM0001"
    )
    [call] = twilio.calls
    assert parse_qs(call.body.decode())["Body"] == ["Pay here: https://x"]


def test_twilio_errors_carry_twilios_message(http_stub: Any) -> None:
    twilio = http_stub(twilio_answer)
    sender = TwilioSmsSender("AC123", "tok", "+15550199", api_base=twilio.url)
    with pytest.raises(DeliveryError) as caught:
        sender.send(OutgoingSms(to="+1bad", body="x"))
    assert str(caught.value) == (
        "Twilio refused the SMS to +1bad: HTTP 400: The 'To' number +1bad is not a valid "
        "phone number. (Twilio error 21211)"
    )


def test_slack_posts_tagged_text(http_stub: Any) -> None:
    slack = http_stub(lambda call: (200, "text/plain", b"ok"))
    SlackWebhook(f"{slack.url}/services/T/B/X").post("Dunning exhausted for in_1")
    [call] = slack.calls
    assert call.path == "/services/T/B/X"
    assert call.json() == {"text": "[billing_ops] Dunning exhausted for in_1"}


def test_slack_unreachable_is_a_delivery_error() -> None:
    with pytest.raises(DeliveryError, match="cannot reach the Slack webhook"):
        SlackWebhook(f"http://127.0.0.1:{free_port()}/hook").post("x")


def test_messages_are_rfc5322_with_encoded_non_ascii_headers() -> None:
    from datetime import UTC, datetime
    from email import policy

    from cloudgreet_billing.adapters.notify.rfc5322 import build_message

    subject = "Payment failed for invoice CG-0001 — please update your card, Zoë " * 3
    email = OutgoingEmail(to="zoe@example.com", subject=subject, body="Héllo\n" + "x" * 200)
    message_id, raw = build_message(
        email, "Cloüd Billing <billing@cloudgreet.test>", datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert raw.isascii()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert str(parsed["Subject"]) == subject
    assert str(parsed["From"]) == "Cloüd Billing <billing@cloudgreet.test>"
    assert parsed["Message-ID"] == f"<{message_id}>"
    assert parsed.get_content().replace("\r\n", "\n") == "Héllo\n" + "x" * 200 + "\n"


def test_a_line_break_in_a_header_is_refused() -> None:
    from datetime import UTC, datetime

    from cloudgreet_billing.adapters.notify.rfc5322 import build_message

    injected = OutgoingEmail(to="a@example.com\r\nBcc: all@example.com", subject="s", body="b")
    with pytest.raises(DeliveryError, match="line break"):
        build_message(injected, "billing@cloudgreet.test", datetime(2026, 3, 2, tzinfo=UTC))


@pytest.fixture
def tls_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that this process trusts (SSL_CERT_FILE)."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    return cert_path, key_path


class TlsSink(SmtpSink):
    def __init__(self) -> None:
        super().__init__()
        self.encrypted: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        transport_tls = server.transport.get_extra_info("sslcontext") is not None
        self.encrypted.append(session.ssl is not None or transport_tls)
        return await super().handle_DATA(server, session, envelope)


def _server_context(certificate: tuple[Path, Path]) -> Any:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_smtp_upgrades_with_starttls(tls_certificate: tuple[Path, Path]) -> None:
    from aiosmtpd.controller import Controller

    sink, port = TlsSink(), free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=_server_context(tls_certificate),
        require_starttls=True,
    )
    controller.start()
    try:
        sender = SmtpEmailSender(f"smtp://127.0.0.1:{port}", "billing@cloudgreet.test")
        sender.send(EMAIL)
        sender.close()
    finally:
        controller.stop()
    assert sink.encrypted == [True]


def test_smtps_speaks_tls_from_the_start(tls_certificate: tuple[Path, Path]) -> None:
    from aiosmtpd.controller import Controller

    sink, port = TlsSink(), free_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, ssl_context=_server_context(tls_certificate)
    )
    controller.start()
    try:
        sender = SmtpEmailSender(f"smtps://127.0.0.1:{port}", "billing@cloudgreet.test")
        sender.send(EMAIL)
        sender.close()
    finally:
        controller.stop()
    assert sink.encrypted == [True]


def test_smtp_refuses_clear_text_to_a_remote_server(
    smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudgreet_billing.adapters.notify import email_smtp

    monkeypatch.setattr(email_smtp, "_loopback", lambda host: False)
    sender = SmtpEmailSender(f"smtp://127.0.0.1:{smtp_server.port}", "billing@cloudgreet.test")
    with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
        sender.send(EMAIL)
    assert smtp_server.received == []
