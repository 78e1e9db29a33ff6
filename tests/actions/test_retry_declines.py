"""``retry`` does not repeat a hard decline on the same card, and does not race Stripe's
own retry: the CLI, the real stripe SDK against a local Stripe, and the store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from cloudgreet_billing.services.sync import apply_events
from tests.actions.conftest import (
    CUSTOMER_ID,
    INVOICE_ID,
    NOW,
    customer,
    data,
    error,
    invoice,
    run,
    story,
)
from tests.stripe_fake import FakeStripe

PAY = f"/v1/invoices/{INVOICE_ID}/pay"
GET = f"/v1/invoices/{INVOICE_ID}"
FAILED_CARD = "pm_1QpL8ILkdIwHu7ixVisa4242"
NEW_CARD = "pm_1QpL9ZLkdIwHu7ixMcrd4444"
PORTAL_FIX = f"cloudgreet-billing portal {INVOICE_ID} --send"


def record_decline(store: Any, decline_code: str, advice_code: str | None = None) -> None:
    """The invoice's failure as ``invoice.payment_failed`` delivers it on an API version
    that expands the PaymentIntent: its decline, and the card that failed."""
    failed = invoice("open")
    failed["payment_intent"] = {
        "id": "pi_3QpL8ILkdIwHu7ix0uJ5wQ2e",
        "object": "payment_intent",
        "payment_method": None,
        "status": "requires_payment_method",
        "last_payment_error": {
            "advice_code": advice_code,
            "code": "card_declined",
            "decline_code": decline_code,
            "message": "Your card was declined.",
            "payment_method": {"id": FAILED_CARD, "object": "payment_method", "type": "card"},
            "type": "card_error",
        },
    }
    event = {
        "id": "evt_1QaTest0000RetryFailed0",
        "object": "event",
        "type": "invoice.payment_failed",
        "created": int((NOW - timedelta(hours=2)).timestamp()),
        "livemode": False,
        "data": {"object": failed},
    }
    report = apply_events(store, [event], source="file", now=NOW)
    assert report.events_applied == 1


def customer_with(card: str | None) -> dict[str, Any]:
    return {
        **customer(),
        "default_source": None,
        "invoice_settings": {"default_payment_method": card, "footer": None},
    }


def subscription(card: str | None = None) -> dict[str, Any]:
    return {
        "id": "sub_QTest01",
        "object": "subscription",
        "customer": CUSTOMER_ID,
        "status": "past_due",
        "default_payment_method": card,
        "default_source": None,
        "livemode": False,
    }


def cards(stripe: FakeStripe, customer_card: str | None, subscription_card: str | None = None):
    stripe.reply("GET", f"/v1/customers/{CUSTOMER_ID}", customer_with(customer_card))
    stripe.reply("GET", "/v1/subscriptions/sub_QTest01", subscription(subscription_card))


# --- hard declines -------------------------------------------------------------------
def test_a_hard_decline_on_the_same_card_is_refused_with_the_fix(
    stripe: FakeStripe, seeded: Any
) -> None:
    record_decline(seeded, "stolen_card")
    stripe.reply("GET", GET, invoice("open"))
    cards(stripe, FAILED_CARD)

    result = run("retry", "1", "--yes")

    assert result.exit_code == 3
    assert result.stderr.count("error:") == 1
    line = next(text for text in result.stderr.splitlines() if text.startswith("error:"))
    assert "declined with stolen_card, a hard decline" in line
    assert f"the card to charge is still {FAILED_CARD}" in line
    assert PORTAL_FIX in result.stderr
    assert stripe.requests_to("POST", PAY) == []
    refused = seeded.audit_trail(INVOICE_ID)[-1]
    assert (refused.outcome, refused.details["reason"]) == (
        "refused",
        "hard decline, card unchanged",
    )
    assert refused.details["decline_code"] == "stolen_card"


def test_the_refusal_in_json_keeps_the_retry_fields(stripe: FakeStripe, seeded: Any) -> None:
    record_decline(seeded, "expired_card")
    stripe.reply("GET", GET, invoice("open"))
    cards(stripe, FAILED_CARD)

    result = run("retry", INVOICE_ID, "--yes", "--json")

    assert result.exit_code == 3
    body = error(result)
    assert body["code"] == "hard_decline"
    assert {key: body[key] for key in ("invoice_id", "status", "decline_code", "outcome")} == {
        "invoice_id": INVOICE_ID,
        "status": "open",
        "decline_code": "expired_card",
        "outcome": "refused",
    }
    assert (body["alert_id"], body["alert_status"]) == (1, "open")
    assert (body["failed_payment_method"], body["payment_method"]) == (FAILED_CARD, FAILED_CARD)
    assert PORTAL_FIX in body["hint"]


def test_the_issuers_advice_makes_a_decline_hard(stripe: FakeStripe, seeded: Any) -> None:
    record_decline(seeded, "insufficient_funds", "do_not_try_again")
    stripe.reply("GET", GET, invoice("open"))
    cards(stripe, FAILED_CARD)

    result = run("retry", "1", "--yes")

    assert result.exit_code == 3
    assert "insufficient_funds (advice do_not_try_again), a hard decline" in result.stderr


def test_a_new_card_lets_the_retry_charge(stripe: FakeStripe, seeded: Any) -> None:
    record_decline(seeded, "stolen_card")
    stripe.reply("GET", GET, invoice("open"))
    # The customer added a card on the subscription: Stripe charges that one first.
    cards(stripe, FAILED_CARD, subscription_card=NEW_CARD)
    stripe.reply("POST", PAY, invoice("paid"))

    result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["outcome"] == "paid"


def test_force_charges_the_same_card_anyway(stripe: FakeStripe, seeded: Any) -> None:
    record_decline(seeded, "stolen_card")
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    result = run("retry", "1", "--yes", "--force")

    assert result.exit_code == 0, result.output
    assert len(stripe.requests_to("POST", PAY)) == 1
    # --force needs no card: nothing was read to judge it.
    assert stripe.requests_to("GET", f"/v1/customers/{CUSTOMER_ID}") == []


def test_a_soft_decline_is_retried_as_before(stripe: FakeStripe, seeded: Any) -> None:
    record_decline(seeded, "insufficient_funds")
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, invoice("paid"))

    assert run("retry", "1", "--yes").exit_code == 0
    assert stripe.requests_to("GET", f"/v1/customers/{CUSTOMER_ID}") == []


def test_a_dry_run_refuses_as_the_real_run_would(stripe: FakeStripe, seeded: Any) -> None:
    record_decline(seeded, "stolen_card")
    stripe.reply("GET", GET, invoice("open"))
    cards(stripe, FAILED_CARD)

    result = run("retry", "1", "--dry-run")

    assert result.exit_code == 3
    assert "a hard decline" in result.stderr and PORTAL_FIX in result.stderr
    assert stripe.requests_to("POST", PAY) == []
    assert [outcome for _, outcome, _ in story(seeded)] == ["refused"]
    assert seeded.audit_trail(INVOICE_ID)[-1].details["dry_run"] is True


def test_a_dry_run_without_a_key_judges_the_mirrors_card(
    seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudgreet_billing.domain.mirror import parse_customer

    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    record_decline(seeded, "lost_card")
    seeded.upsert_customer(parse_customer(customer_with(FAILED_CARD)), NOW, NOW)
    refused = run("retry", "1", "--dry-run")
    assert refused.exit_code == 3
    assert f"still {FAILED_CARD}" in refused.stderr

    seeded.upsert_customer(parse_customer(customer_with(NEW_CARD)), NOW + timedelta(1), NOW)
    allowed = run("retry", "1", "--dry-run", "--json")
    assert allowed.exit_code == 0, allowed.output
    assert data(allowed)["checked_against"] == "mirror"


# --- Stripe's own retry ----------------------------------------------------------------
def soon(hours: float = 2) -> dict[str, Any]:
    due = invoice("open")
    due["next_payment_attempt"] = int((NOW + timedelta(hours=hours)).timestamp())
    return due


def test_a_script_does_not_race_stripes_retry_without_force(
    stripe: FakeStripe, seeded: Any
) -> None:
    stripe.reply("GET", GET, soon(2))

    with freeze_time(NOW):
        result = run("retry", "1", "--yes", "--json")

    assert result.exit_code == 3
    body = error(result)
    assert body["code"] == "stripe_retries_soon"
    assert body["message"] == (
        f"Stripe charges invoice {INVOICE_ID} itself at 2026-11-24 05:00 UTC (in 2 h), "
        "within BILLING_RETRY_RACE_WINDOW (6h); not charging it first"
    )
    assert body["stripe_retries_at"] == "2026-11-24T05:00:00Z"
    assert body["invoice_id"] == INVOICE_ID and body["outcome"] == "refused"
    assert body["decline_code"] is None, "the contract's field, with no decline known"
    assert stripe.requests_to("POST", PAY) == []
    assert seeded.audit_trail(INVOICE_ID)[-1].details["reason"] == "Stripe retries soon"


def test_force_races_stripe_on_purpose(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, soon(2))
    stripe.reply("POST", PAY, invoice("paid"))

    with freeze_time(NOW):
        result = run("retry", "1", "--yes", "--force")

    assert result.exit_code == 0, result.output


def test_a_retry_stripe_makes_later_than_the_window_is_no_race(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_RETRY_RACE_WINDOW", "90m")
    stripe.reply("GET", GET, soon(2))
    stripe.reply("POST", PAY, invoice("paid"))

    with freeze_time(NOW):
        assert run("retry", "1", "--yes").exit_code == 0


def test_on_a_terminal_it_asks_and_a_no_sends_nothing(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)
    stripe.reply("GET", GET, soon(2))

    with freeze_time(NOW):
        result = run("retry", "1", input="n\n")

    assert result.exit_code == 3
    assert (
        f"Stripe charges invoice {INVOICE_ID} itself at 2026-11-24 05:00 UTC (in 2 h). "
        "Charge it now anyway?"
    ) in result.stderr
    assert stripe.requests_to("POST", PAY) == []
    assert seeded.audit_trail(INVOICE_ID)[-1].outcome == "declined_at_prompt"


def test_on_a_terminal_a_yes_then_the_usual_confirmation_charges(
    stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloudgreet_billing.cli.actions.interactive", lambda: True)
    stripe.reply("GET", GET, soon(2))
    stripe.reply("POST", PAY, invoice("paid"))

    with freeze_time(NOW):
        result = run("retry", "1", input="y\ny\n")

    assert result.exit_code == 0, result.output
    assert len(stripe.requests_to("POST", PAY)) == 1
    intent = next(line for line in seeded.audit_trail(INVOICE_ID) if line.outcome == "intent")
    assert intent.details["stripe_retries_at"] == "2026-11-24T05:00:00Z"


def test_a_dry_run_shows_stripes_next_attempt(stripe: FakeStripe, seeded: Any) -> None:
    stripe.reply("GET", GET, soon(30))

    with freeze_time(NOW):
        result = run("retry", "1", "--dry-run")
        as_json = run("retry", "1", "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    assert "Stripe's next own attempt: 2026-11-25 09:00 UTC" in result.stdout
    assert data(as_json)["stripe_retries_at"] == "2026-11-25T09:00:00Z"


def test_a_hard_decline_of_a_retry_is_kept_and_refuses_the_next_one(
    stripe: FakeStripe, seeded: Any
) -> None:
    # With invoice events alone (API 2026-10-28) the mirror knows no decline: the first
    # manual charge tells it, and the next retry on the same card is refused.
    from tests.stripe_fake import Reply, error_body

    declined = error_body(
        "Your card was declined.",
        type_="card_error",
        code="card_declined",
        decline_code="lost_card",
    )
    declined["error"]["advice_code"] = "do_not_try_again"
    declined["error"]["payment_method"] = {
        "id": FAILED_CARD,
        "object": "payment_method",
        "type": "card",
    }
    stripe.reply("GET", GET, invoice("open"))
    stripe.reply("POST", PAY, Reply(402, declined))
    cards(stripe, FAILED_CARD)

    first = run("retry", "1", "--yes")
    second = run("retry", "1", "--yes")

    assert (first.exit_code, second.exit_code) == (1, 3)
    mirrored = seeded.get_invoice(INVOICE_ID)
    assert (
        mirrored.last_decline_code,
        mirrored.last_advice_code,
        mirrored.last_failure_payment_method,
    ) == ("lost_card", "do_not_try_again", FAILED_CARD)
    assert "declined with lost_card (advice do_not_try_again)" in second.stderr
    assert len(stripe.requests_to("POST", PAY)) == 1
