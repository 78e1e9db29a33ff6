"""``resend-link``: Stripe emails an open invoice again; anything else is refused unsent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from freezegun import freeze_time

from tests.actions.conftest import (
    INVOICE_ID,
    alert_notes,
    data,
    error,
    invoice,
    run,
    story,
)
from tests.stripe_fake import FakeStripe, Reply, error_body, unused_port

SEND = f"/v1/invoices/{INVOICE_ID}/send"
GET = f"/v1/invoices/{INVOICE_ID}"


KEY = f"cloudgreet-billing:resend-link:{INVOICE_ID}:2026-11-24"


@pytest.fixture(autouse=True)
def on_a_known_day() -> Iterator[None]:
    """The key names the UTC day; a clock that ticks from a fixed start keeps it known."""
    with freeze_time("2026-11-24 03:00:00", tick=True):
        yield


def test_open_invoice_is_sent_by_stripe(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", SEND, invoice("open"))

    result = run("resend-link", "1", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert data(result) == {
        "invoice_id": INVOICE_ID,
        "customer_id": "cus_QTestAcme01",
        "status": "open",
        "amount_due": 12000,
        "currency": "usd",
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_test/{INVOICE_ID}",
        "alert_id": 1,
        "sent": True,
        "outcome": "sent",
    }
    assert "Stripe test mode · account acct_1TestCloudGreet" in result.stderr
    [send] = stripe.requests_to("POST", SEND)
    assert send.idempotency_key == KEY
    assert story(seeded) == [
        ("resend-link", "intent", KEY),
        ("resend-link", "sent", KEY),
    ]
    assert alert_notes(seeded, 1) == [
        ("tester@ci", "invoice email resent by Stripe at tester@ci's request")
    ]


def test_a_second_resend_the_same_day_sends_nothing(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", SEND, invoice("open"))

    first = run("resend-link", INVOICE_ID, "--yes")
    second = run("resend-link", INVOICE_ID, "--yes")

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert "already resent today" in second.stdout
    assert "by tester@ci" in second.stdout
    assert len(stripe.requests_to("POST", SEND)) == 1
    assert [outcome for _, outcome, _ in story(seeded)] == ["intent", "sent", "already_sent"]


@pytest.mark.parametrize(
    ("status", "reason", "suggests_portal"),
    [
        ("void", "is void: nothing is owed on it", False),
        ("draft", "is a draft, not yet finalized", False),
        ("uncollectible", "is marked uncollectible", True),
    ],
)
def test_invoices_that_are_not_open_exit_2_without_calling_send(
    stripe: FakeStripe, seeded: Any, status: str, reason: str, suggests_portal: bool
) -> None:
    stripe.reply("GET", GET, invoice(status))

    result = run("resend-link", "1", "--yes")

    # The same condition exits as it does in retry: the invoice cannot take the action.
    assert result.exit_code == 2
    assert f"invoice {INVOICE_ID} {reason}" in result.stderr
    assert ("portal 1 --send" in result.stderr) is suggests_portal
    assert stripe.requests_to("POST", SEND) == []
    assert story(seeded) == [("resend-link", "refused", None)]


def test_a_paid_invoice_needs_nothing_sent_and_exits_0(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("paid"))

    result = run("resend-link", "1", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert (data(result)["outcome"], data(result)["sent"]) == ("already_paid", False)
    assert stripe.requests_to("POST", SEND) == []
    assert story(seeded) == [("resend-link", "already_paid", None)]


def test_stripe_refusal_is_one_line_with_stripes_message(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply(
        "POST",
        SEND,
        Reply(
            400,
            error_body(
                "You can only manually send an invoice if its collection method is 'send_invoice'.",
                code="invoice_not_editable",
            ),
        ),
    )

    result = run("resend-link", "1", "--yes")

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: Stripe refused to send invoice")
    assert "collection method is 'send_invoice'" in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert story(seeded) == [
        ("resend-link", "intent", KEY),
        ("resend-link", "failed", KEY),
    ]
    assert "send_invoice" in seeded.audit_trail(INVOICE_ID)[-1].details["error"]


def test_dry_run_prints_the_request_and_sends_nothing(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, invoice("open"))

    result = run("resend-link", "1", "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["request"] == {
        "method": "POST",
        "path": SEND,
        "params": {},
        "idempotency_key": KEY,
    }
    assert data(result)["sent"] is False
    assert [(r.method, r.path) for r in stripe.requests] == [("GET", "/v1/account"), ("GET", GET)]
    assert story(seeded) == [("resend-link", "dry_run", KEY)]


def test_not_interactive_without_yes_exits_3_before_any_request(
    stripe: FakeStripe, seeded: Any
) -> None:
    result = run("resend-link", "1", "--json")

    assert result.exit_code == 3
    assert error(result)["code"] == "refused"
    assert stripe.requests == []
    assert story(seeded) == [("resend-link", "refused", None)]


def test_unreachable_stripe_exits_75(
    fake_stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", fake_stripe.api_key)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{unused_port()}")

    result = run("resend-link", "1", "--yes")

    assert result.exit_code == 75
    assert [outcome for _, outcome, _ in story(seeded)] == ["unavailable"]
