"""The action services with an in-memory Stripe, on both store backends (SQLite and a real
PostgreSQL), so the store operations they rely on are checked on each engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from cloudgreet_billing.adapters.payments import PaymentDeclined, StripeRequestFailed
from cloudgreet_billing.errors import BillingError
from cloudgreet_billing.services.actions import (
    Banner,
    ConfirmRequest,
    Safety,
    portal_link,
    retry_key,
    retry_payment,
)
from cloudgreet_billing.services.alerts import show_alert
from tests.actions.conftest import (
    ACCOUNT,
    CUSTOMER_ID,
    INVOICE_ID,
    alert_notes,
    alert_row,
    insert_alert,
    invoice,
    seed,
    step_statuses,
    story,
)

KEY = retry_key(INVOICE_ID, 1)


@dataclass
class FakeGateway:
    """Stripe in memory: scripted answers, every call recorded."""

    mode: str = "test"
    invoice: dict[str, Any] = field(default_factory=lambda: invoice("open"))
    pay: Callable[[str], Mapping[str, Any]] = lambda _key: invoice("paid")
    account: Callable[[], Mapping[str, Any]] = lambda: ACCOUNT
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def retrieve_account(self) -> Mapping[str, Any]:
        self.calls.append(("account", None))
        return self.account()

    def retrieve_invoice(self, invoice_id: str) -> Mapping[str, Any]:
        self.calls.append(("invoice", invoice_id))
        return self.invoice

    def retrieve_customer(self, customer_id: str) -> Mapping[str, Any]:
        raise AssertionError("not scripted")

    def pay_invoice(self, invoice_id: str, *, idempotency_key: str) -> Mapping[str, Any]:
        self.calls.append(("pay", idempotency_key))
        return self.pay(idempotency_key)

    def send_invoice(self, invoice_id: str, *, idempotency_key: str) -> Mapping[str, Any]:
        raise AssertionError("not scripted")

    def create_portal_session(
        self, customer_id: str, *, return_url: str, idempotency_key: str | None = None
    ) -> Mapping[str, Any]:
        self.calls.append(("portal", idempotency_key))
        return {"id": "bps_1", "url": "https://billing.stripe.com/p/session/x"}


def yes() -> Safety:
    return Safety(assume_yes=True)


def test_retry_key_is_the_invoice_and_its_attempt_count() -> None:
    assert retry_key("in_1", 3) == "cloudgreet-billing:retry:in_1:attempt-3"
    assert retry_key("in_1", 3) == retry_key("in_1", 3)
    assert retry_key("in_1", 3, 1) == "cloudgreet-billing:retry:in_1:attempt-3.1"
    assert retry_key("in_1", 4) != retry_key("in_1", 3)


def test_success_settles_on_each_backend(store: Any) -> None:
    seed(store)
    gateway = FakeGateway()

    result = retry_payment(store, gateway, "1", safety=yes(), actor="tester@ci")

    assert (result.status, result.outcome, result.alert_status) == ("paid", "paid", "resolved")
    assert result.resolved_alert_ids == (1,)
    assert result.canceled_steps == 3
    assert gateway.calls == [("account", None), ("invoice", INVOICE_ID), ("pay", KEY)]
    assert alert_row(store, 1)["status"] == "resolved"
    assert alert_row(store, 1)["resolution"] == "paid by a manual retry (tester@ci)"
    assert step_statuses(store) == ["canceled"] * 3
    assert store.get_invoice(INVOICE_ID).status == "paid"
    assert story(store) == [("retry", "intent", KEY), ("retry", "paid", KEY)]
    assert [line.outcome for line in store.audit_trail("alert:1")] == ["resolved"]


def test_a_retry_settles_every_unresolved_alert_of_the_invoice(store: Any) -> None:
    # The same rule as a paid event: all of the invoice's unresolved alerts, not only the
    # payment alerts, are resolved with the resolution recorded, and dunning is canceled.
    seed(store)
    exhausted = insert_alert(store, "dunning_exhausted")

    result = retry_payment(store, FakeGateway(), "1", safety=yes(), actor="tester@ci")

    assert result.resolved_alert_ids == (1, exhausted)
    assert result.canceled_steps == 3
    for alert_id in (1, exhausted):
        row = alert_row(store, alert_id)
        assert (row["status"], row["resolution"]) == (
            "resolved",
            "paid by a manual retry (tester@ci)",
        )
        assert [line.action for line in store.audit_trail(f"alert:{alert_id}")] == ["alert.resolve"]
    (outcome,) = store.action_audit(INVOICE_ID, "retry")[1:]
    assert outcome.details["resolved_alerts"] == [1, exhausted]


def test_alert_show_merges_the_actions_on_its_invoice_and_customer(store: Any) -> None:
    seed(store)
    retry_payment(store, FakeGateway(), "1", safety=yes(), actor="tester@ci")
    for given in ("1", CUSTOMER_ID):  # the second names no alert: not part of its story
        portal_link(
            store, FakeGateway(), given, safety=yes(), actor="tester@ci", app_url="https://x.test"
        )

    audit = show_alert(store, 1).audit

    assert [(line.action, line.target, line.outcome) for line in audit] == [
        ("retry", INVOICE_ID, "intent"),
        ("alert.resolve", "alert:1", "resolved"),
        ("retry", INVOICE_ID, "paid"),
        ("portal", CUSTOMER_ID, "intent"),
        ("portal", CUSTOMER_ID, "created"),
    ]
    assert all(line.details["alert_id"] == 1 for line in audit if line.action == "portal")


def test_decline_records_the_attempt_on_each_backend(store: Any) -> None:
    seed(store)

    def declined(_key: str) -> Mapping[str, Any]:
        raise PaymentDeclined(
            "Stripe declined to pay invoice: Your card was declined.",
            decline_code="generic_decline",
            stripe_code="card_declined",
        )

    with pytest.raises(BillingError) as raised:
        retry_payment(store, FakeGateway(pay=declined), "1", safety=yes(), actor="tester@ci")

    assert raised.value.exit_code == 1
    assert raised.value.details["decline_code"] == "generic_decline"
    row = alert_row(store, 1)
    assert (row["status"], row["attempt_count"]) == ("open", 2)
    assert row["last_failure"] == (
        "generic_decline: Stripe declined to pay invoice: Your card was declined."
    )
    assert len(alert_notes(store, 1)) == 1
    assert story(store) == [("retry", "intent", KEY), ("retry", "declined", KEY)]


def test_requires_action_opens_one_alert_on_each_backend(store: Any) -> None:
    seed(store)

    def needs_action(_key: str) -> Mapping[str, Any]:
        raise PaymentDeclined(
            "Stripe declined to pay invoice: authentication required",
            decline_code=None,
            stripe_code="invoice_payment_intent_requires_action",
        )

    gateway = FakeGateway(pay=needs_action)
    for _ in range(2):
        with pytest.raises(BillingError) as raised:
            retry_payment(store, gateway, INVOICE_ID, safety=yes(), actor="tester@ci")
        assert raised.value.code == "payment_action_required"

    assert raised.value.details["action_alert_id"] == 2
    assert alert_row(store, 2)["type"] == "payment_action_required"
    assert store.action_audit(INVOICE_ID, "retry")[-1].details["action_alert_id"] == 2
    # The second attempt is a new one: Stripe would replay the first answer for the same key.
    assert [key for _, outcome, key in story(store) if outcome == "intent"] == [
        KEY,
        retry_key(INVOICE_ID, 1, 1),
    ]


def test_a_payment_still_processing_leaves_the_alert_open(store: Any) -> None:
    seed(store)
    gateway = FakeGateway(pay=lambda _key: invoice("open"))

    result = retry_payment(store, gateway, "1", safety=yes(), actor="tester@ci")

    assert (result.outcome, result.status, result.alert_status) == ("submitted", "open", "open")
    assert alert_row(store, 1)["status"] == "open"
    assert story(store) == [("retry", "intent", KEY), ("retry", "submitted", KEY)]


def test_an_uncollectible_invoice_can_still_be_charged(store: Any) -> None:
    seed(store)
    gateway = FakeGateway(invoice=invoice("uncollectible"))

    result = retry_payment(store, gateway, "1", safety=yes(), actor="tester@ci")

    assert result.outcome == "paid"


@pytest.mark.parametrize(
    ("problem", "outcome"),
    [(KeyboardInterrupt(), "interrupted"), (RuntimeError("boom"), "failed")],
)
def test_an_interrupted_or_crashed_call_still_gets_its_outcome_line(
    store: Any, problem: BaseException, outcome: str
) -> None:
    seed(store)

    def pay(_key: str) -> Mapping[str, Any]:
        raise problem

    with pytest.raises(type(problem)):
        retry_payment(store, FakeGateway(pay=pay), "1", safety=yes(), actor="tester@ci")

    assert story(store) == [("retry", "intent", KEY), ("retry", outcome, KEY)]


def test_the_banner_and_the_question_reach_the_operator(store: Any) -> None:
    seed(store)
    banners: list[Banner] = []
    asked: list[ConfirmRequest] = []

    def confirm(request: ConfirmRequest) -> bool:
        asked.append(request)
        return True

    retry_payment(
        store,
        FakeGateway(),
        "1",
        safety=Safety(interactive=True, confirm=confirm, show_banner=banners.append),
        actor="tester@ci",
    )

    assert banners == [Banner("test", "acct_1TestCloudGreet", "CloudGreet Test")]
    [request] = asked
    assert (request.customer_id, request.invoice_id, request.amount, request.currency) == (
        CUSTOMER_ID,
        INVOICE_ID,
        12000,
        "usd",
    )
    assert request.customer_label == "Acme Dental · ap@acme-dental.test"


def test_a_key_that_may_not_read_the_account_still_shows_its_mode(store: Any) -> None:
    seed(store)
    banners: list[Banner] = []

    def forbidden() -> Mapping[str, Any]:
        raise StripeRequestFailed("no permission", stripe_code=None, http_status=403)

    retry_payment(
        store,
        FakeGateway(account=forbidden),
        "1",
        safety=Safety(assume_yes=True, show_banner=banners.append),
        actor="tester@ci",
    )

    assert banners == [Banner("test")]


def test_portal_send_without_an_alert_still_audits(store: Any) -> None:
    seed(store, with_alert=False)

    class Outbox:
        name = "memory"

        def __init__(self) -> None:
            self.sent: list[Any] = []

        def send(self, email: Any) -> str:
            self.sent.append(email)
            return "msg-1"

        def close(self) -> None:
            return None

    outbox = Outbox()
    result = portal_link(
        store,
        FakeGateway(),
        CUSTOMER_ID,
        safety=yes(),
        actor="tester@ci",
        app_url="https://app.test",
        send=True,
        email=outbox,
    )

    assert (result.sent, result.alert_id) == (True, None)
    assert outbox.sent[0].to == "ap@acme-dental.test"
    assert [line.outcome for line in store.audit_trail(CUSTOMER_ID)] == ["intent", "sent"]
    assert store.audit_trail(CUSTOMER_ID)[-1].details["message_id"] == "msg-1"
