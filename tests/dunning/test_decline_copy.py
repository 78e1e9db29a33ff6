"""Message copy knows the decline: a hard decline asks for a new card, a soft one says when
Stripe tries again, an unknown one keeps the general copy. Events go through ``sync`` into
the store (SQLite and PostgreSQL), and ``dunning preview`` shows what would be sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from tests.dunning.stripe_objects import INVOICE_ID, event, invoice_object, ndjson, unix

FAILED_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CARD = "pm_1QpL8ILkdIwHu7ixVisa4242"
PORTAL = "https://billing.stripe.com/p/login/test_3cs9EU7Jm1qG0ko4gg"


def failed_invoice(
    decline_code: str | None, advice_code: str | None = None, *, next_attempt: bool = True
) -> dict[str, Any]:
    """``invoice.payment_failed``'s invoice with its PaymentIntent expanded, as an API
    version before basil sends it (the decline on ``last_payment_error``)."""
    obj = invoice_object(finalized_at=FAILED_AT)
    obj["next_payment_attempt"] = unix(FAILED_AT + timedelta(days=3)) if next_attempt else None
    obj["payment_intent"] = {
        "id": "pi_3QpL8ILkdIwHu7ix0uJ5wQ2e",
        "object": "payment_intent",
        "payment_method": None,
        "status": "requires_payment_method",
        "last_payment_error": {
            "advice_code": advice_code,
            "code": "card_declined",
            "decline_code": decline_code,
            "message": "Your card was declined.",
            "payment_method": {"id": CARD, "object": "payment_method", "type": "card"},
            "type": "card_error",
        },
    }
    return obj


def synced(tmp_path: Path, invoice: dict[str, Any]) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text(
        ndjson(event("evt_1QpL8ILkdIwHu7ixPf2aLd0B", "invoice.payment_failed", invoice, FAILED_AT))
    )
    result = CliRunner().invoke(app, ["sync", "--events-file", str(path), "--json"])
    assert result.exit_code == 0, result.output


def preview() -> list[dict[str, Any]]:
    with freeze_time(FAILED_AT + timedelta(hours=1)):
        result = CliRunner().invoke(
            app, ["dunning", "preview", INVOICE_ID, "--json"], catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout)["data"]["messages"])


def test_the_store_keeps_the_decline_for_the_messages(store: Any, tmp_path: Path) -> None:
    synced(tmp_path, failed_invoice("stolen_card", "do_not_try_again"))
    facts = store.invoice_facts(INVOICE_ID)
    assert (facts.decline_code, facts.advice_code) == ("stolen_card", "do_not_try_again")
    assert facts.next_payment_attempt == FAILED_AT + timedelta(days=3)
    mirrored = store.get_invoice(INVOICE_ID)
    assert mirrored.last_failure_payment_method == CARD


def test_a_hard_decline_asks_for_a_new_card(store: Any, tmp_path: Path) -> None:
    synced(tmp_path, failed_invoice("stolen_card"))
    day0, day1, day3 = preview()
    assert (
        day0["subject"] == "Your card was declined for invoice CG-7F3A-0042 — please add a new card"
    )
    assert "cannot be charged again" in day0["body"]
    # No portal link configured: the payment page, which takes a new card too.
    assert "https://invoice.stripe.com/i/acct_1Nv0FGLkdIwHu7ix/" in day0["body"]
    assert "cannot be charged again. Please add a new card" in day1["body"]
    assert day3["subject"].startswith("Final reminder: add a new card")


def test_the_portal_link_of_billing_config_goes_into_a_hard_declines_messages(
    store: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    synced(tmp_path, failed_invoice("expired_card"))
    config = tmp_path / "billing.toml"
    config.write_text(f'[dunning]\nportal_url = "{PORTAL}"\n')
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    day0, day1, _ = preview()
    assert PORTAL in day0["body"] and PORTAL in day1["body"]
    assert "invoice.stripe.com" not in day1["body"]


def test_a_soft_decline_says_stripe_tries_again_and_when(store: Any, tmp_path: Path) -> None:
    synced(tmp_path, failed_invoice("insufficient_funds"))
    day0, day1, day3 = preview()
    assert day0["subject"] == (
        "Payment failed for invoice CG-7F3A-0042 — we will try again on 2026-11-26 09:00 UTC"
    )
    assert "We will try your card again on 2026-11-26 09:00 UTC" in day0["body"]
    assert "We will try again on 2026-11-26 09:00 UTC" in day1["body"]
    assert "try your card again on 2026-11-26 09:00 UTC" in day3["body"]


def test_an_unknown_decline_keeps_todays_copy(store: Any, tmp_path: Path) -> None:
    synced(tmp_path, failed_invoice(None))
    day0, day1, day3 = preview()
    assert day0["subject"] == (
        "Payment failed for invoice CG-7F3A-0042 — please update your payment method"
    )
    assert "We will retry automatically, and you can pay now, or update your card" in day0["body"]
    assert day1["body"].startswith("CloudGreet: a friendly reminder that $149.00 is due")
    assert day3["subject"] == "Final reminder: $149.00 due on invoice CG-7F3A-0042"


def test_a_soft_decline_stripe_will_not_retry_keeps_the_general_copy(
    store: Any, tmp_path: Path
) -> None:
    # No next_payment_attempt: Stripe has given up, so no message may say it tries again.
    synced(tmp_path, failed_invoice("insufficient_funds", next_attempt=False))
    day0, _, _ = preview()
    assert day0["subject"].endswith("please update your payment method")


def test_a_portal_link_that_is_not_https_is_refused_with_the_fix(
    store: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    synced(tmp_path, failed_invoice("stolen_card"))
    config = tmp_path / "billing.toml"
    config.write_text('[dunning]\nportal_url = "http://billing.example/login"\n')
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    result = CliRunner().invoke(app, ["dunning", "preview", INVOICE_ID])
    assert result.exit_code == 2
    assert result.stderr.count("\n") <= 2, "one line and its hint"
    assert "dunning.portal_url must be an https:// link" in result.stderr
    assert "Customer portal" in result.stderr


def test_dunning_run_sends_the_hard_copy_with_the_portal_link(
    store: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from email import message_from_bytes
    from email.policy import default

    outbox = tmp_path / "outbox"
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "file")
    monkeypatch.setenv("BILLING_SMS_BACKEND", "file")
    monkeypatch.setenv("BILLING_OUTBOX_DIR", str(outbox))
    monkeypatch.setenv("EMAIL_FROM", "billing@cloudgreet.test")
    config = tmp_path / "billing.toml"
    config.write_text(f'[dunning]\nportal_url = "{PORTAL}"\n')
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    synced(tmp_path, failed_invoice("stolen_card"))

    with freeze_time(FAILED_AT + timedelta(hours=1)):
        result = CliRunner().invoke(app, ["dunning", "run", "--json"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"]["sent"] == 1
    [sent] = sorted(outbox.glob("*.eml"))
    message = message_from_bytes(sent.read_bytes(), policy=default)
    assert message["Subject"] == (
        "Your card was declined for invoice CG-7F3A-0042 — please add a new card"
    )
    assert PORTAL in message.get_content()
