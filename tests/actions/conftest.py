"""Fixtures for operator actions: Stripe-shaped objects, a seeded store, the audit story."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.cli import app
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.dunning import StepDraft
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice
from tests.stripe_fake import FakeStripe, fake_stripe, stripe_env  # noqa: F401 (fixture)

INVOICE_ID = "in_1QaTest0000Retry"
CUSTOMER_ID = "cus_QTestAcme01"
ACCOUNT = {
    "id": "acct_1TestCloudGreet",
    "object": "account",
    "email": "billing@cloudgreet.test",
    "settings": {"dashboard": {"display_name": "CloudGreet Test"}},
    "business_profile": {"name": "CloudGreet"},
}
CREATED = 1_763_900_000
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def invoice(
    status: str = "open",
    *,
    invoice_id: str = INVOICE_ID,
    attempt_count: int = 1,
    amount_due: int = 12_000,
    amount_paid: int | None = None,
) -> dict[str, Any]:
    """An invoice shaped like Stripe's (the fields the toolkit reads, plus a few more)."""
    paid = amount_due if status == "paid" else 0
    paid = paid if amount_paid is None else amount_paid
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": CUSTOMER_ID,
        "customer_email": "ap@acme-dental.test",
        "customer_name": "Acme Dental",
        "status": status,
        "currency": "usd",
        "amount_due": amount_due,
        "amount_paid": paid,
        "amount_remaining": amount_due - paid,
        "total": amount_due,
        "total_excluding_tax": amount_due,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "collection_method": "charge_automatically",
        "created": CREATED,
        "due_date": None,
        "next_payment_attempt": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_test/{invoice_id}",
        "livemode": False,
        "number": "CG-0042",
        "parent": {"subscription_details": {"subscription": "sub_QTest01"}, "type": "x"},
    }


def customer() -> dict[str, Any]:
    return {
        "id": CUSTOMER_ID,
        "object": "customer",
        "email": "ap@acme-dental.test",
        "name": "Acme Dental",
        "currency": "usd",
        "created": CREATED,
        "livemode": False,
    }


def portal_session(return_url: str) -> dict[str, Any]:
    return {
        "id": "bps_1TestSession",
        "object": "billing_portal.session",
        "customer": CUSTOMER_ID,
        "return_url": return_url,
        "url": "https://billing.stripe.com/p/session/test_YWNjdF9zZWNyZXQ",
        "livemode": False,
        "created": CREATED,
    }


def requires_action_body() -> dict[str, Any]:
    return {
        "error": {
            "type": "invalid_request_error",
            "code": "invoice_payment_intent_requires_action",
            "message": "This payment requires additional user action before it can be "
            "completed successfully.",
        }
    }


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite store for CLI runs (the store suite covers PostgreSQL)."""
    url = f"sqlite:///{tmp_path}/billing.db"
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    store = open_store(load_settings(), check_schema=False)
    store.migrate()
    store.close()
    return url


@pytest.fixture
def seeded(sqlite_env: str) -> Iterator[Any]:
    """An open invoice_failed alert (id 1) for the mirrored invoice, with three dunning
    steps scheduled, and the customer mirrored; yields the store."""
    store = open_store(load_settings())
    seed(store)
    yield store
    store.close()


def seed(store: Any, *, with_alert: bool = True) -> int | None:
    observed = datetime.fromtimestamp(CREATED, UTC)
    store.upsert_invoice(parse_invoice(invoice()), observed, observed)
    store.upsert_customer(parse_customer(customer()), observed, observed)
    if not with_alert:
        return None
    alert_id = insert_alert(store, "invoice_failed")
    store.schedule_steps(
        [
            StepDraft(
                invoice_id=INVOICE_ID,
                customer_id=CUSTOMER_ID,
                alert_id=alert_id,
                day=day,
                channel=channel,
                template=f"day{day}_{channel}",
                due_at=observed + timedelta(days=day),
            )
            for day, channel in ((0, "email"), (1, "sms"), (3, "email"))
        ],
        observed,
    )
    return alert_id


def insert_alert(store: Any, alert_type: str) -> int:
    """An alert row as event processing opens it (the alerts area has no test seam here)."""
    observed = datetime.fromtimestamp(CREATED, UTC)
    with store._transaction():
        row = store._execute(
            "INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id, "
            "amount_due, currency, attempt_count, created_at, updated_at) "
            "VALUES (?, 'open', ?, ?, ?, 12000, 'usd', 1, ?, ?) RETURNING id",
            (alert_type, f"{alert_type}:{INVOICE_ID}", CUSTOMER_ID, INVOICE_ID, observed, observed),
        ).fetchone()
    return int(row[0])


def alert_row(store: Any, alert_id: int) -> dict[str, Any]:
    row = store._execute(
        "SELECT type, status, attempt_count, last_failure, resolution FROM billing_alerts "
        "WHERE id = ?",
        (alert_id,),
    ).fetchone()
    return dict(
        zip(("type", "status", "attempt_count", "last_failure", "resolution"), row, strict=True)
    )


def alert_notes(store: Any, alert_id: int) -> list[tuple[str, str]]:
    rows = store._execute(
        "SELECT author, body FROM billing_alert_notes WHERE alert_id = ? ORDER BY id", (alert_id,)
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def step_statuses(store: Any) -> list[str]:
    return [step.status for step in store.list_steps(invoice_id=INVOICE_ID)]


def story(store: Any, target: str = INVOICE_ID) -> list[tuple[str, str, str | None]]:
    """The audit log about ``target``: (action, outcome, idempotency key) in order."""
    return [(line.action, line.outcome, line.idempotency_key) for line in store.audit_trail(target)]


def run(*args: str, input: str | None = None) -> Any:
    """The CLI, as a user runs it."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def data(result: Any) -> Any:
    return json.loads(result.stdout)["data"]


def error(result: Any) -> Any:
    return json.loads(result.stdout)["error"]


@pytest.fixture
def stripe(fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> FakeStripe:  # noqa: F811
    """The fake Stripe with the account scripted and the CLI pointed at it."""
    stripe_env(monkeypatch, fake_stripe)
    fake_stripe.reply("GET", "/v1/account", ACCOUNT)
    return fake_stripe


class MailSink:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes
        from email.policy import default

        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=default))
        )
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailSink]:
    """The CLI's email backend pointed at a local SMTP server."""
    from aiosmtpd.controller import Controller

    from tests.stripe_fake import unused_port

    sink = MailSink()
    sink.port = unused_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{sink.port}")
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    try:
        yield sink
    finally:
        controller.stop()
