"""The real stripe SDK against the local fake Stripe: requests, retries, error mapping."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudgreet_billing.adapters.payments import PaymentDeclined, StripeRequestFailed
from cloudgreet_billing.adapters.stripe import API_VERSION, StripeGateway
from cloudgreet_billing.cli import app
from cloudgreet_billing.errors import BillingError, ExitCode, Unavailable
from tests.stripe_fake import (
    TEST_API_KEY,
    FakeStripe,
    Reply,
    card_declined,
    error_body,
    not_found,
    rate_limited,
    server_error,
    unused_port,
)
from tests.sync.conftest import T0, customer, failed, invoice, subscription


def gateway(fake: FakeStripe) -> StripeGateway:
    return StripeGateway(fake.api_key, api_base=fake.url)


def test_events_come_oldest_first_across_pages_from_the_cursor(fake: FakeStripe) -> None:
    events = [failed(f"evt_{n:03d}", f"in_{n}", 1, T0 + n) for n in range(250)]
    fake.paginate("/v1/events", events)

    got = list(gateway(fake).list_events(created_after=datetime.fromtimestamp(T0 + 10, UTC)))

    assert [e["id"] for e in got] == [f"evt_{n:03d}" for n in range(10, 250)]
    pages = fake.requests_to("GET", "/v1/events")
    assert [r.query for r in pages] == [
        {"created[gte]": str(T0 + 10), "limit": "100"},
        {"created[gte]": str(T0 + 10), "limit": "100", "starting_after": "evt_150"},
        {"created[gte]": str(T0 + 10), "limit": "100", "starting_after": "evt_050"},
    ]
    assert {r.headers["stripe-version"] for r in pages} == {API_VERSION}


def test_invoices_listed_100_per_page_with_a_created_window(fake: FakeStripe) -> None:
    fake.paginate("/v1/invoices", [invoice(f"in_{n}", created=T0 + n) for n in range(150)])
    got = list(
        gateway(fake).list_invoices(
            created_gte=datetime.fromtimestamp(T0 + 20, UTC),
            created_lt=datetime.fromtimestamp(T0 + 140, UTC),
        )
    )
    assert len(got) == 120 and got[0]["id"] == "in_139"
    first = fake.requests_to("GET", "/v1/invoices")[0].query
    assert first == {"created[gte]": str(T0 + 20), "created[lt]": str(T0 + 140), "limit": "100"}


def test_429_is_retried_with_the_same_idempotency_key(fake: FakeStripe) -> None:
    fake.reply(
        "POST",
        "/v1/invoices/in_1/pay",
        rate_limited(),
        rate_limited(),
        invoice("in_1", status="paid"),
    )
    paid = gateway(fake).pay_invoice("in_1", idempotency_key="retry-in_1-3")
    assert paid["status"] == "paid"
    sent = fake.requests_to("POST", "/v1/invoices/in_1/pay")
    assert [r.idempotency_key for r in sent] == ["retry-in_1-3"] * 3


def test_a_listing_page_is_retried_after_a_429(fake: FakeStripe) -> None:
    fake.paginate("/v1/subscriptions", [subscription()], before=[rate_limited()])
    assert [s["id"] for s in gateway(fake).list_subscriptions()] == ["sub_1"]
    # Discounts come expanded, so MRR can apply their coupons.
    assert fake.requests_to("GET", "/v1/subscriptions")[-1].query == {
        "status": "all",
        "limit": "100",
        "expand[0]": "data.discounts",
        "expand[1]": "data.items.data.discounts",
    }


def test_customers_are_listed_100_per_page_newest_first(fake: FakeStripe) -> None:
    # GET /v1/customers lists newest first and, as Stripe documents, no deleted customer.
    fake.paginate("/v1/customers", [customer(f"cus_{n:03d}", created=T0 + n) for n in range(230)])
    got = list(gateway(fake).list_customers())
    assert [c["id"] for c in got] == [f"cus_{n:03d}" for n in reversed(range(230))]
    assert got[0]["email"] == "owner@example.com" and got[0]["phone"] == "+15550001111"
    assert [r.query for r in fake.requests_to("GET", "/v1/customers")] == [
        {"limit": "100"},
        {"limit": "100", "starting_after": "cus_130"},
        {"limit": "100", "starting_after": "cus_030"},
    ]


def test_persistent_429_is_unavailable(fake: FakeStripe) -> None:
    fake.reply("GET", "/v1/account", rate_limited())
    with pytest.raises(Unavailable) as caught:
        gateway(fake).retrieve_account()
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


def test_500_is_retried_by_the_sdk_then_unavailable(fake: FakeStripe) -> None:
    fake.reply("GET", "/v1/invoices/in_1", server_error())
    with pytest.raises(Unavailable) as caught:
        gateway(fake).retrieve_invoice("in_1")
    assert caught.value.exit_code == 75
    assert len(fake.requests_to("GET", "/v1/invoices/in_1")) == 3  # 1 + 2 network retries


def test_500_then_success(fake: FakeStripe) -> None:
    fake.reply("GET", "/v1/customers/cus_1", server_error(), {"id": "cus_1", "object": "customer"})
    assert gateway(fake).retrieve_customer("cus_1")["id"] == "cus_1"


def test_refused_connection_is_unavailable(fake_stripe: FakeStripe) -> None:
    dead = StripeGateway(fake_stripe.api_key, api_base=f"http://127.0.0.1:{unused_port()}")
    with pytest.raises(Unavailable, match="cannot reach Stripe"):
        dead.retrieve_account()


def test_card_decline_carries_the_decline_code(fake: FakeStripe) -> None:
    fake.reply("POST", "/v1/invoices/in_1/pay", card_declined("insufficient_funds"))
    with pytest.raises(PaymentDeclined) as caught:
        gateway(fake).pay_invoice("in_1", idempotency_key="k")
    assert (caught.value.decline_code, caught.value.stripe_code) == (
        "insufficient_funds",
        "card_declined",
    )
    assert caught.value.exit_code == 1


def test_other_refusals_keep_stripes_message(fake: FakeStripe) -> None:
    fake.reply(
        "POST",
        "/v1/invoices/in_1/send",
        Reply(400, error_body("You can only send an open invoice.", code="invoice_not_editable")),
    )
    with pytest.raises(StripeRequestFailed, match="You can only send an open invoice") as caught:
        gateway(fake).send_invoice("in_1", idempotency_key="k")
    assert (caught.value.stripe_code, caught.value.http_status) == ("invoice_not_editable", 400)


def test_portal_session_sends_customer_and_return_url(fake: FakeStripe) -> None:
    fake.reply(
        "POST",
        "/v1/billing_portal/sessions",
        {"id": "bps_1", "object": "billing_portal.session", "url": "https://b.st/p"},
    )
    session = gateway(fake).create_portal_session(
        "cus_1", return_url="https://app.example.com/admin/billing"
    )
    assert session["url"] == "https://b.st/p"
    (sent,) = fake.requests_to("POST", "/v1/billing_portal/sessions")
    assert sent.form == {"customer": "cus_1", "return_url": "https://app.example.com/admin/billing"}


def test_bad_key_exits_1_with_a_hint(fake: FakeStripe, store_env: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_revoked00000000000000")
    result = CliRunner().invoke(app, ["sync", "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "stripe_auth"
    assert "STRIPE_SECRET_KEY" in error["hint"] and "revoked0000" not in result.stdout


def test_sync_exits_75_when_stripe_fails(fake: FakeStripe, store_env: str) -> None:
    fake.reply("GET", "/v1/events", server_error())
    result = CliRunner().invoke(app, ["sync", "--json"])
    assert result.exit_code == 75
    assert json.loads(result.stdout)["error"]["code"] == "stripe_unavailable"


def test_a_missing_object_stays_a_refusal_naming_resource_missing(fake: FakeStripe) -> None:
    fake.reply("GET", "/v1/invoices/in_1", not_found("invoice", "in_1"))

    with pytest.raises(StripeRequestFailed) as caught:
        gateway(fake).retrieve_invoice("in_1")

    assert (caught.value.stripe_code, caught.value.http_status) == ("resource_missing", 404)
    assert caught.value.details["request_id"].startswith("req_")


@pytest.mark.parametrize(
    ("suffix", "hint"),
    [
        ("/not-stripe", "check STRIPE_API_BASE"),
        ("/v1", "without /v1"),
    ],
)
def test_an_unrecognized_route_is_a_configuration_error(
    fake: FakeStripe, suffix: str, hint: str
) -> None:
    fake.expect_unrecognized = True
    wrong = StripeGateway(fake.api_key, api_base=fake.url + suffix)

    with pytest.raises(BillingError) as caught:
        wrong.retrieve_invoice("in_1")

    assert not isinstance(caught.value, StripeRequestFailed)
    assert (caught.value.code, caught.value.exit_code) == ("stripe_unrecognized_url", 2)
    assert f"(GET: {suffix}/v1/invoices/in_1)" in caught.value.message
    assert hint in (caught.value.hint or "")


def test_a_server_that_answers_html_is_not_stripe() -> None:
    page = b"<html><body><h1>404 Not Found</h1>" + b"x" * 5000 + b"</body></html>"

    class Html(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        host, port = server.server_address[:2]
        with pytest.raises(BillingError) as caught:
            StripeGateway(TEST_API_KEY, api_base=f"http://{host}:{port}").retrieve_account()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    assert (caught.value.code, caught.value.exit_code) == ("stripe_unrecognized_url", 2)
    assert "the answer is not Stripe's JSON" in caught.value.message
    assert "<html" not in caught.value.message
