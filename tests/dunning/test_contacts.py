"""Dunning reaches the customer the invoice names, and a person hears about any it cannot.

Stripe copies the customer's email, phone and name onto an invoice when it is finalized; a
webhook fed invoice events alone (as the playbook's endpoint is) carries no customer
objects. On SQLite and PostgreSQL, through the CLI, from whole Stripe objects.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from cloudgreet_billing.domain.dunning import (
    Contact,
    CustomerContact,
    InvoiceContact,
    freshest_contact,
)
from tests.dunning.stripe_objects import (
    CUSTOMER_ID,
    INVOICE_ID,
    customer_object,
    event,
    invoice_object,
    ndjson,
)

runner = CliRunner()
FINALIZED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY0 = FINALIZED + timedelta(minutes=5)
DAY1 = FINALIZED + timedelta(days=1, minutes=5)


def invoke(*args: str, input: str | None = None) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"], input=input, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)["data"] if result.stdout.strip() else None


def sync(*events: dict[str, Any]) -> dict[str, Any]:
    code, body = invoke("sync", "--events-file", "-", input=ndjson(*events))
    assert code == 0, body
    return body  # type: ignore[no-any-return]


def failed_invoice(**fields: Any) -> list[dict[str, Any]]:
    """``invoice.finalized`` and ``invoice.payment_failed`` in the same second."""
    invoice = invoice_object(finalized_at=FINALIZED, **fields)
    return [
        event("evt_1QpL8ILkdIwHu7ixFinal001", "invoice.finalized", invoice, FINALIZED),
        event("evt_1QpL8ILkdIwHu7ixFailed01", "invoice.payment_failed", invoice, FINALIZED),
    ]


def customer_event(at: datetime, event_type: str = "customer.updated", **fields: Any) -> Any:
    return event(
        f"evt_1QpL9xLkdIwHu7ixC{at:%d%H%M}{event_type.removeprefix('customer.')[0]}",
        event_type,
        customer_object(**fields),
        at,
    )


@pytest.fixture
def outbox(store_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outbox"
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "file")
    monkeypatch.setenv("BILLING_SMS_BACKEND", "file")
    monkeypatch.setenv("BILLING_OUTBOX_DIR", str(folder))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    return folder


def emails(folder: Path) -> list[str]:
    return sorted(path.read_text() for path in folder.glob("*.eml")) if folder.exists() else []


def run_at(moment: datetime) -> tuple[int, dict[str, Any]]:
    with freeze_time(moment):
        return invoke("dunning", "run")


# --- the freshest contact we know ------------------------------------------------------


def customer(at: datetime, **fields: Any) -> CustomerContact:
    values = {"email": "now@example.com", "phone": "+15550001", "name": "Now"} | fields
    return CustomerContact(observed_at=at, **values)


INVOICE_COPY = InvoiceContact("copy@example.com", "+15550002", "Copy", finalized_at=FINALIZED)


@pytest.mark.parametrize(
    ("known", "invoice", "expected"),
    [
        # Only the invoice names the customer (a webhook fed invoice events alone).
        (None, INVOICE_COPY, Contact("copy@example.com", "+15550002", "Copy")),
        # The customer record seen after finalization is the later word...
        (customer(FINALIZED), INVOICE_COPY, Contact("now@example.com", "+15550001", "Now")),
        # ...even where it is empty: an address removed since is not used from the copy.
        (
            customer(FINALIZED + timedelta(hours=1), email=None),
            INVOICE_COPY,
            Contact(None, "+15550001", "Now"),
        ),
        # A customer seen before finalization is older than the invoice's copy, which
        # wins where it has a value.
        (
            customer(FINALIZED - timedelta(days=9), phone="+15550009"),
            InvoiceContact("copy@example.com", None, None, FINALIZED),
            Contact("copy@example.com", "+15550009", "Now"),
        ),
        # An invoice whose finalization time is unknown is older than any customer record.
        (
            customer(FINALIZED - timedelta(days=9)),
            InvoiceContact("copy@example.com", "+15550002", "Copy", finalized_at=None),
            Contact("now@example.com", "+15550001", "Now"),
        ),
        # A customer deleted in Stripe is written to by nobody, whatever the copy says.
        (
            customer(FINALIZED + timedelta(hours=1), deleted=True),
            INVOICE_COPY,
            Contact(name="Now", customer_deleted=True),
        ),
    ],
)
def test_the_freshest_contact_field_by_field(
    known: CustomerContact | None, invoice: InvoiceContact, expected: Contact
) -> None:
    assert freshest_contact(known, invoice) == expected


# --- through sync and dunning run ------------------------------------------------------


def test_invoice_events_alone_reach_the_customer_the_invoice_names(
    store: Any, outbox: Path
) -> None:
    sync(*failed_invoice())
    code, summary = run_at(DAY0)
    assert (code, summary["sent"], summary["skipped"], summary["undeliverable"]) == (0, 1, 0, 0)
    [day0] = emails(outbox)
    assert "To: ops@brightsmile-dental.example" in day0
    assert "Hi Bright Smile Dental," in day0
    assert "$149.00" in day0

    # The SMS goes to the phone the invoice carries.
    code, summary = run_at(DAY1)
    assert (code, summary["sent"]) == (0, 1)
    [sms] = [json.loads(p.read_text()) for p in outbox.glob("*.sms.json")]
    assert sms["to"] == "+14155550123"


def test_a_customer_record_newer_than_the_invoice_wins(store: Any, outbox: Path) -> None:
    sync(*failed_invoice(), customer_event(FINALIZED + timedelta(minutes=2)))
    run_at(DAY0)
    [day0] = emails(outbox)
    assert "To: billing@brightsmile-dental.example" in day0
    assert "Hi Bright Smile Dental LLC," in day0


def test_an_invoice_newer_than_the_customer_record_wins(store: Any, outbox: Path) -> None:
    older = customer_event(FINALIZED - timedelta(days=3), email="old@brightsmile-dental.example")
    sync(older, *failed_invoice())
    run_at(DAY0)
    [day0] = emails(outbox)
    assert "To: ops@brightsmile-dental.example" in day0


def test_an_address_removed_after_finalization_is_not_used(store: Any, outbox: Path) -> None:
    removed = customer_event(FINALIZED + timedelta(minutes=2), email=None)
    sync(*failed_invoice(), removed)
    code, summary = run_at(DAY0)
    # The phone (the customer's own, newer) still reaches them: the email step is skipped.
    assert (code, summary["sent"], summary["skipped"], summary["undeliverable"]) == (0, 0, 1, 0)
    [step] = [s for s in store.list_steps(invoice_id=INVOICE_ID, limit=None) if s.day == 0]
    assert step.reason == f"customer {CUSTOMER_ID} has no email address"
    assert emails(outbox) == []


def test_no_contact_anywhere_is_undeliverable_alerted_once_and_exits_4(
    store: Any, outbox: Path
) -> None:
    sync(*failed_invoice(email=None, phone=None))
    code, summary = run_at(DAY0)
    reason = f"customer {CUSTOMER_ID} has no email address or phone number"
    assert (code, summary["due"], summary["skipped"], summary["undeliverable"]) == (4, 1, 1, 1)
    day0 = store.list_steps(invoice_id=INVOICE_ID, limit=1)[0]
    assert summary["undeliverable_steps"] == [
        {"step_id": day0.id, "invoice_id": INVOICE_ID, "customer_id": CUSTOMER_ID, "reason": reason}
    ]
    assert (day0.status, day0.reason) == ("skipped", reason)

    code, alerts = invoke("alerts", "list", "--type", "dunning_undeliverable")
    [alert] = alerts
    assert (alert["invoice_id"], alert["customer_id"], alert["amount_due"]) == (
        INVOICE_ID,
        CUSTOMER_ID,
        14900,
    )
    assert alert["currency"] == "usd"

    # The next step reaches nobody either: counted again, still one alert for the invoice.
    code, summary = run_at(DAY1)
    assert (code, summary["undeliverable"]) == (4, 1)
    _, alerts = invoke("alerts", "list", "--type", "dunning_undeliverable", "--status", "all")
    assert [a["id"] for a in alerts] == [alert["id"]]
    assert [a.action for a in store.audit_trail(f"alert:{alert['id']}")] == ["alert.open"]


def test_a_customer_deleted_in_stripe_is_messaged_by_nobody(store: Any, outbox: Path) -> None:
    deleted = customer_event(FINALIZED + timedelta(minutes=2), "customer.deleted")
    sync(*failed_invoice(), deleted)
    code, summary = run_at(DAY0)
    assert (code, summary["undeliverable"]) == (4, 1)
    assert summary["undeliverable_steps"][0]["reason"] == (
        f"customer {CUSTOMER_ID} was deleted in Stripe"
    )
    assert emails(outbox) == []


def test_the_payment_resolves_the_undeliverable_alert(store: Any, outbox: Path) -> None:
    sync(*failed_invoice(email=None, phone=None))
    run_at(DAY0)
    paid = invoice_object(finalized_at=FINALIZED, status="paid", email=None, phone=None)
    synced = sync(event("evt_1QpL8ILkdIwHu7ixPaid0001", "invoice.paid", paid, DAY1))
    assert synced["alerts_resolved"] == 2  # invoice_failed and dunning_undeliverable
    _, alerts = invoke("alerts", "list", "--type", "dunning_undeliverable", "--status", "all")
    assert [(a["status"], a["resolution"]) for a in alerts] == [
        ("resolved", "invoice paid (evt_1QpL8ILkdIwHu7ixPaid0001)")
    ]


def test_a_contact_that_appears_resolves_the_alert_and_the_next_reminder_uses_it(
    store: Any, outbox: Path
) -> None:
    sync(*failed_invoice(email=None, phone=None))
    run_at(DAY0)
    found = customer_event(FINALIZED + timedelta(hours=2), phone=None)
    synced = sync(found)
    assert synced["alerts_resolved"] == 1
    _, alerts = invoke("alerts", "list", "--type", "dunning_undeliverable", "--status", "all")
    assert [(a["status"], a["resolution"]) for a in alerts] == [
        ("resolved", "the customer can be reached again: the next reminder goes by email")
    ]
    # Day 1 is an SMS and there is still no phone; the email on day 3 will reach them.
    code, summary = run_at(DAY1)
    assert (code, summary["skipped"], summary["undeliverable"]) == (0, 1, 0)
    code, summary = run_at(FINALIZED + timedelta(days=3, minutes=5))
    assert (code, summary["sent"]) == (0, 1)
    assert "To: billing@brightsmile-dental.example" in emails(outbox)[0]


def test_dashboard_and_doctor_count_the_invoices_nobody_can_reach(store: Any, outbox: Path) -> None:
    sync(*failed_invoice(email=None, phone=None))
    reachable = invoice_object(
        invoice_id="in_1QpL8HLkdIwHu7ixReachMe0", finalized_at=FINALIZED, customer_id="cus_Rk"
    )
    sync(event("evt_1QpL8ILkdIwHu7ixFailed02", "invoice.payment_failed", reachable, FINALIZED))
    with freeze_time(DAY0):
        _, board = invoke("dashboard")
        human = runner.invoke(app, ["dashboard"], catch_exceptions=False)
        _, doctor = invoke("doctor")
    assert board["dunning_unreachable"] == 1
    assert "1 unreachable" in human.stdout
    [check] = [c for c in doctor["checks"] if c["name"] == "dunning contacts"]
    assert check == {
        "name": "dunning contacts",
        "status": "warn",
        "detail": f"1 unpaid invoice cannot be reached by any channel ({INVOICE_ID}); "
        "see: alerts list --type dunning_undeliverable",
    }
