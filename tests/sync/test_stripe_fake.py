"""The fake Stripe answers as Stripe documents, seen on the wire and through the real SDK.

Each case is a documented behaviour (cited in ``tests/stripe_fake.py``) that the gateway's
tests rely on; if the fake drifted from Stripe, these would say where.
"""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

import pytest

from cloudgreet_billing.adapters.stripe import API_VERSION, StripeGateway
from cloudgreet_billing.errors import ExitCode, Unavailable
from tests.stripe_fake import (
    FakeStripe,
    Recorded,
    Reply,
    lock_timeout,
    not_found,
    rate_limited,
    server_error,
)

INVOICE_ID = "in_1QpL8HLkdIwHu7ixl4OzzPMv"


def raw(
    fake: FakeStripe, method: str, path: str, *, key: str | None = None, form: str = ""
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request as bytes on the wire: status, headers (lower-case) and JSON body."""
    headers = {"Authorization": f"Bearer {fake.api_key}", "Stripe-Version": API_VERSION}
    if key:
        headers["Idempotency-Key"] = key
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    host, port = fake.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(method, path, body=form if method == "POST" else None, headers=headers)
        answer = connection.getresponse()
        got = {name.lower(): value for name, value in answer.getheaders()}
        return answer.status, got, json.loads(answer.read())
    finally:
        connection.close()


def test_an_unknown_route_is_unrecognized_with_no_code(fake_stripe: FakeStripe) -> None:
    fake_stripe.expect_unrecognized = True

    status, headers, body = raw(fake_stripe, "GET", "/v1/invoicez/in_1")

    assert status == 404
    assert body == {
        "error": {
            "type": "invalid_request_error",
            "message": "Unrecognized request URL (GET: /v1/invoicez/in_1). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
        }
    }
    assert "stripe-should-retry" not in headers


def test_an_unscripted_route_is_a_violation_unless_expected() -> None:
    with FakeStripe() as fake:
        raw(fake, "GET", "/v1/customers/cus_1")
    assert fake.violations == ["GET /v1/customers/cus_1: no such route was scripted"]


def test_a_missing_object_is_resource_missing_naming_the_param(fake_stripe: FakeStripe) -> None:
    fake_stripe.reply("GET", f"/v1/invoices/{INVOICE_ID}", not_found("invoice", INVOICE_ID))

    status, _, body = raw(fake_stripe, "GET", f"/v1/invoices/{INVOICE_ID}")

    assert status == 404
    assert body["error"]["code"] == "resource_missing"
    assert body["error"]["param"] == "id"
    assert body["error"]["message"] == f"No such invoice: '{INVOICE_ID}'"
    assert body["error"]["doc_url"] == "https://stripe.com/docs/error-codes/resource-missing"


def test_every_answer_carries_a_request_id(fake_stripe: FakeStripe) -> None:
    fake_stripe.reply("GET", "/v1/account", {"id": "acct_1", "object": "account"})

    first = raw(fake_stripe, "GET", "/v1/account")[1]["request-id"]
    second = raw(fake_stripe, "GET", "/v1/account")[1]["request-id"]

    assert re.fullmatch(r"req_[A-Za-z0-9]{14}", first)
    assert first != second


def test_a_plain_429_has_no_should_retry_header_and_a_lock_timeout_says_true(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.reply("GET", "/v1/account", rate_limited())
    fake_stripe.reply("GET", "/v1/balance", lock_timeout())

    limited, limited_headers, limited_body = raw(fake_stripe, "GET", "/v1/account")
    locked, locked_headers, locked_body = raw(fake_stripe, "GET", "/v1/balance")

    assert (limited, limited_body["error"]["code"]) == (429, "rate_limit")
    assert "stripe-should-retry" not in limited_headers
    assert (locked, locked_body["error"]["code"]) == (429, "lock_timeout")
    assert locked_headers["stripe-should-retry"] == "true"


def test_the_sdk_leaves_a_plain_429_to_us_and_retries_a_lock_timeout_itself(
    fake_stripe: FakeStripe,
) -> None:
    # stripe-python's _should_retry: no header and a 429 -> no retry; "true" -> retry.
    fake_stripe.reply("GET", "/v1/account", rate_limited())
    fake_stripe.reply("GET", "/v1/invoices/in_1", lock_timeout(), {"id": "in_1"})
    gateway = StripeGateway(
        fake_stripe.api_key, api_base=fake_stripe.url, rate_limit_retries=0, network_retries=2
    )

    with pytest.raises(Unavailable, match="rate-limiting"):
        gateway.retrieve_account()
    assert gateway.retrieve_invoice("in_1")["id"] == "in_1"

    assert len(fake_stripe.requests_to("GET", "/v1/account")) == 1
    assert len(fake_stripe.requests_to("GET", "/v1/invoices/in_1")) == 2


def test_a_429_stripe_says_not_to_retry_is_not_retried(fake_stripe: FakeStripe) -> None:
    fake_stripe.reply(
        "GET", "/v1/account", Reply(429, rate_limited().body, {"Stripe-Should-Retry": "false"})
    )

    with pytest.raises(Unavailable, match="said not to retry") as caught:
        StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url).retrieve_account()

    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert len(fake_stripe.requests_to("GET", "/v1/account")) == 1


def test_a_replayed_post_says_so_and_runs_the_endpoint_once(fake_stripe: FakeStripe) -> None:
    runs: list[Recorded] = []

    def pay(request: Recorded) -> Reply:
        runs.append(request)
        return Reply(200, {"id": "in_1", "object": "invoice", "status": "paid"})

    fake_stripe.reply("POST", "/v1/invoices/in_1/pay", pay)

    first = raw(fake_stripe, "POST", "/v1/invoices/in_1/pay", key="k1")
    again = raw(fake_stripe, "POST", "/v1/invoices/in_1/pay", key="k1")

    assert len(runs) == 1
    assert first[0] == again[0] == 200 and first[2] == again[2]
    assert "idempotent-replayed" not in first[1]
    assert again[1]["idempotent-replayed"] == "true"
    assert again[1]["idempotency-key"] == "k1"


def test_a_key_reused_with_other_parameters_is_an_idempotency_error(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.reply("POST", "/v1/billing_portal/sessions", {"id": "bps_1", "url": "https://x"})

    raw(fake_stripe, "POST", "/v1/billing_portal/sessions", key="k", form="customer=cus_1")
    status, _, body = raw(
        fake_stripe, "POST", "/v1/billing_portal/sessions", key="k", form="customer=cus_2"
    )

    assert status == 400
    assert body["error"]["type"] == "idempotency_error"
    assert "can only be used with the same parameters" in body["error"]["message"]
    assert "code" not in body["error"]
    # Our keys must never do this, so the fake counts it against the test...
    assert len(fake_stripe.violations) == 1
    fake_stripe.violations.clear()


def test_the_gateway_reports_a_reused_key_as_a_bug_not_a_retry(fake_stripe: FakeStripe) -> None:
    fake_stripe.reply("POST", "/v1/invoices/in_1/pay", {"id": "in_1", "status": "paid"})
    fake_stripe.reply("POST", "/v1/invoices/in_1/send", {"id": "in_1", "status": "open"})
    gateway = StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url)
    gateway.pay_invoice("in_1", idempotency_key="same-key")

    with pytest.raises(Exception) as caught:
        gateway.send_invoice("in_1", idempotency_key="same-key")

    error: Any = caught.value
    assert (error.code, error.exit_code) == ("stripe_idempotency", ExitCode.FAILED)
    assert len(fake_stripe.requests_to("POST", "/v1/invoices/in_1/send")) == 1
    fake_stripe.violations.clear()


def test_a_500_to_a_post_is_saved_marked_do_not_retry_and_replayed(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.reply("POST", "/v1/invoices/in_1/pay", server_error(), {"id": "in_1"})

    first = raw(fake_stripe, "POST", "/v1/invoices/in_1/pay", key="k")
    again = raw(fake_stripe, "POST", "/v1/invoices/in_1/pay", key="k")

    assert (first[0], first[1]["stripe-should-retry"]) == (500, "false")
    assert (again[0], again[1]["idempotent-replayed"]) == (500, "true")


def test_a_rate_limited_post_is_not_saved_so_its_retry_runs(fake_stripe: FakeStripe) -> None:
    # The rate limiter answers before the endpoint starts: nothing is saved under the key.
    fake_stripe.reply("POST", "/v1/invoices/in_1/pay", rate_limited(), {"id": "in_1"})

    limited = raw(fake_stripe, "POST", "/v1/invoices/in_1/pay", key="k")
    paid = raw(fake_stripe, "POST", "/v1/invoices/in_1/pay", key="k")

    assert (limited[0], paid[0]) == (429, 200)
    assert "idempotent-replayed" not in paid[1]
