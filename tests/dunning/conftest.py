"""Dunning fixtures: seeded invoices, a real SMTP server, and local Twilio/Slack endpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from typer.testing import Result

from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice
from tests.pg_cluster import free_port

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SmtpSinkT = TypeVar("SmtpSinkT", bound="SmtpSink")


def seed_invoice(
    store: Any,
    invoice_id: str = "in_1",
    customer_id: str = "cus_1",
    *,
    status: str = "open",
    amount: int = 12345,
    currency: str = "usd",
    email: str | None = "ada@example.com",
    phone: str | None = "+15550100",
    name: str | None = "Ada Lovelace",
    pay_url: str | None = "https://invoice.stripe.com/i/test_1",
    number: str | None = "CG-0001",
    now: datetime = T0,
) -> None:
    """Mirror a Stripe-shaped customer and invoice through the store's own operations."""
    created = int(now.timestamp())
    customer = parse_customer(
        {
            "id": customer_id,
            "object": "customer",
            "email": email,
            "name": name,
            "phone": phone,
            "created": created,
        }
    )
    invoice = parse_invoice(
        {
            "id": invoice_id,
            "object": "invoice",
            "customer": customer_id,
            "status": status,
            "number": number,
            "currency": currency,
            "amount_due": amount,
            "amount_paid": amount if status == "paid" else 0,
            "amount_remaining": 0 if status == "paid" else amount,
            "total": amount,
            "attempt_count": 1,
            "attempted": True,
            "hosted_invoice_url": pay_url,
            "created": created,
        }
    )
    store.upsert_customer(customer, now, now)
    store.upsert_invoice(dataclasses.replace(invoice, first_failed_at=now), now, now)


def schedule(
    store: Any,
    invoice_id: str = "in_1",
    customer_id: str = "cus_1",
    *,
    first_failed_at: datetime = T0,
    planner: TimelinePlanner | None = None,
) -> int:
    drafts = (planner or TimelinePlanner())(
        invoice_id=invoice_id,
        customer_id=customer_id,
        alert_id=None,
        first_failed_at=first_failed_at,
    )
    return store.schedule_steps(drafts, first_failed_at)


def settle(store: Any, invoice_id: str = "in_1", customer_id: str = "cus_1") -> None:
    """The invoice gets paid: the mirror says so and pending steps are canceled."""
    seed_invoice(store, invoice_id, customer_id, status="paid", now=T0.replace(hour=10))
    store.cancel_pending_steps(invoice_id, "invoice paid", T0.replace(hour=10))


@dataclasses.dataclass
class Received:
    rcpt: str
    step_id: int | None
    message: Message


class SmtpSink:
    """What a real SMTP server on 127.0.0.1 received, by dunning step."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.sessions = 0
        self.lock = threading.Lock()
        self.on_message: Callable[[Received], None] | None = None
        self.port = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        step = message["X-CloudGreet-Dunning-Step"]
        for rcpt in envelope.rcpt_tos:
            item = Received(rcpt, int(step) if step else None, message)
            with self.lock:
                self.received.append(item)
            if self.on_message is not None:
                self.on_message(item)
        return "250 2.0.0 Ok: queued"

    def step_ids(self) -> list[int]:
        with self.lock:
            return [item.step_id for item in self.received if item.step_id is not None]


@contextlib.contextmanager
def serving(sink: SmtpSinkT) -> Iterator[SmtpSinkT]:
    """A real SMTP server on 127.0.0.1 handing its sessions to ``sink``."""
    from aiosmtpd.controller import Controller

    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    with serving(SmtpSink()) as sink:
        yield sink


def run_counts(**counts: Any) -> dict[str, Any]:
    """``dunning run --json``'s counts: zero unless given."""
    base: dict[str, Any] = {
        "due": 0,
        "sent": 0,
        "skipped": 0,
        "failed": 0,
        "canceled": 0,
        "escalated": 0,
        "paused": False,
        "dry_run": False,
        "needs_review": 0,
        "leases_expired": 0,
        "undeliverable": 0,
        "exempt": 0,
        "escalation_failures": 0,
        "undeliverable_steps": [],
    }
    base.update(counts)
    return base


def assert_nothing_secret(result: Result, *secrets: str) -> None:
    """No traceback and none of ``secrets`` in what the command printed."""
    printed = result.stdout + result.stderr
    assert "Traceback" not in printed
    for secret in secrets:
        assert secret not in printed


@dataclasses.dataclass
class HttpCall:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpStub:
    """A local HTTP server: records each request and answers with ``respond(call)``."""

    def __init__(self, respond: Callable[[HttpCall], tuple[int, str, bytes]]) -> None:
        self.calls: list[HttpCall] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.answer("POST")

            def do_GET(self) -> None:
                self.answer("GET")

            def answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                call = HttpCall(
                    method, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                stub.calls.append(call)
                status, content_type, body = respond(call)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for the serving loop to notice it, which
        # at the default half second made every test using a stub half a second slower.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_stub() -> Iterator[Callable[..., HttpStub]]:
    stubs: list[HttpStub] = []

    def make(respond: Callable[[HttpCall], tuple[int, str, bytes]]) -> HttpStub:
        stub = HttpStub(respond)
        stubs.append(stub)
        return stub

    yield make
    for stub in stubs:
        stub.close()


@dataclasses.dataclass
class LoginSmtp:
    """A real SMTP server on 127.0.0.1 that accepts one login and refuses every other."""

    sink: SmtpSink
    port: int
    login: str
    password: str
    attempts: list[tuple[str, str]]


@pytest.fixture
def smtp_login_server() -> Iterator[LoginSmtp]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    server = LoginSmtp(SmtpSink(), free_port(), "mailer", "right-horse-battery", [])

    def authenticate(smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        login, password = data.login.decode(), data.password.decode()
        server.attempts.append((login, password))
        accepted = (login, password) == (server.login, server.password)
        # handled=False: aiosmtpd answers a refusal with 535 itself (else it stays silent).
        return AuthResult(success=accepted, handled=False)

    server.sink.port = server.port
    controller = Controller(
        server.sink,
        hostname="127.0.0.1",
        port=server.port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
