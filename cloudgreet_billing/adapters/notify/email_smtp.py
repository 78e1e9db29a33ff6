"""Email over SMTP: one connection per run, STARTTLS (``smtp://``) or TLS (``smtps://``)."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Callable
from ipaddress import ip_address
from typing import Literal
from urllib.parse import unquote, urlsplit

from cloudgreet_billing.adapters.notify.protocol import DeliveryError, OutgoingEmail
from cloudgreet_billing.adapters.notify.rfc5322 import build_message
from cloudgreet_billing.clock import utcnow


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _close_quietly(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.close()


#: Where ``SmtpEmailSender.verify`` stopped: reaching the server (TLS included), the
#: login, or the server's answer to the sender address.
SmtpStage = Literal["connect", "login", "sender"]


class SmtpCheckError(DeliveryError):
    """``verify`` failed; ``stage`` says at which step, so a caller can say what to fix."""

    def __init__(self, message: str, stage: SmtpStage) -> None:
        super().__init__(message)
        self.stage: SmtpStage = stage


class SmtpEmailSender:
    """Opens the connection on the first message and reuses it until ``close``.

    ``smtp://`` upgrades with STARTTLS; a server that does not offer it is refused unless
    it is on this machine (a local relay or test server), so mail and passwords never
    cross a network in clear text.
    """

    name = "smtp"

    def __init__(self, url: str, sender: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self._implicit_tls = parts.scheme == "smtps"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._implicit_tls else 587)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._sender = sender
        self._timeout = timeout
        self._connection: smtplib.SMTP | None = None
        #: Why the server refused the login, once it has: the credentials will not change
        #: during this run, and a login retried for every message can lock the account out.
        self._login_refused: str | None = None

    @property
    def where(self) -> str:
        return f"{self._host}:{self._port}"

    def _connect(self) -> smtplib.SMTP:
        if self._login_refused is not None:
            raise DeliveryError(self._login_refused)
        context = ssl.create_default_context()
        connection: smtplib.SMTP | None = None
        try:
            if self._implicit_tls:
                connection = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self._timeout, context=context
                )
                connection.ehlo()
            else:
                connection = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
                connection.ehlo()
                if connection.has_extn("starttls"):
                    connection.starttls(context=context)
                    connection.ehlo()
                elif not _loopback(self._host):
                    connection.close()
                    raise DeliveryError(
                        f"SMTP server {self.where} does not offer STARTTLS; "
                        "use smtps:// or a server that does"
                    )
            if self._username:
                connection.login(self._username, self._password or "")
        except smtplib.SMTPAuthenticationError as exc:
            _close_quietly(connection)
            self._login_refused = f"SMTP server {self.where} refused the login ({exc.smtp_code})"
            raise DeliveryError(self._login_refused) from None
        except (smtplib.SMTPException, OSError) as exc:
            _close_quietly(connection)
            raise DeliveryError(f"cannot reach SMTP server {self.where}: {exc}") from None
        return connection

    def _open(self) -> smtplib.SMTP:
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def send(self, email: OutgoingEmail) -> str:
        message_id, data = build_message(email, self._sender, utcnow())
        connection = self._open()
        try:
            code, reply = connection.mail(self._sender)
        except smtplib.SMTPServerDisconnected:
            # The server closed an idle connection; nothing was sent, so reconnect once.
            self._drop()
            connection = self._open()
            code, reply = self._guard(lambda: connection.mail(self._sender))
        self._expect(connection, "MAIL FROM", code, reply, (250,))
        code, reply = self._guard(lambda: connection.rcpt(email.to))
        self._expect(connection, f"recipient {email.to}", code, reply, (250, 251))
        code, reply = self._guard(lambda: connection.data(data))
        self._expect(connection, "message", code, reply, (250,))
        return message_id

    def _guard(self, call: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        try:
            return call()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise DeliveryError(f"SMTP server {self.where} failed: {exc}") from None

    def _expect(
        self,
        connection: smtplib.SMTP,
        what: str,
        code: int,
        reply: bytes,
        accepted: tuple[int, ...],
    ) -> None:
        if code in accepted:
            return
        text = reply.decode("utf-8", "replace").strip()
        try:
            connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()
        raise DeliveryError(f"SMTP server {self.where} refused the {what}: {code} {text}")

    def verify(self) -> str:
        """Connect and log in exactly as sending would, offer the sender, then QUIT.

        No mail is sent: the MAIL FROM is reset before QUIT, and no DATA is ever given.
        Returns what the server proved, e.g. ``smtp.example.com:587 accepted the login as
        billing``. Raises ``SmtpCheckError`` (a ``DeliveryError``) naming the server and
        the SMTP code, never the password.
        """
        try:
            connection = self._connect()
        except DeliveryError as exc:
            stage: SmtpStage = "login" if self._login_refused is not None else "connect"
            raise SmtpCheckError(str(exc), stage) from None
        try:
            code, reply = connection.mail(self._sender)
            if code == 250:
                connection.rset()
        except (smtplib.SMTPException, OSError) as exc:
            _close_quietly(connection)
            raise SmtpCheckError(f"SMTP server {self.where} failed: {exc}", "connect") from None
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.quit()
        _close_quietly(connection)
        if code != 250:
            text = reply.decode("utf-8", "replace").strip()
            raise SmtpCheckError(
                f"SMTP server {self.where} refused the sender {self._sender}: {code} {text}",
                "sender",
            )
        if self._username:
            return f"{self.where} accepted the login as {self._username}"
        return f"{self.where} accepts mail from {self._sender} (no login configured)"

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._connection.quit()
            self._drop()
