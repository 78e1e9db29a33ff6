"""Injected faults, and what postgrest-py does with them: it retries GET (and HEAD) on 503,
520 and dropped connections, with a 1 s, 2 s, 4 s back-off, never a POST and never a
timeout (``send_with_retry`` and ``RequestConfig.should_retry`` in postgrest-py 2.x)."""

from __future__ import annotations

import httpx
import pytest
from postgrest.exceptions import APIError

from tests.postgrest.conftest import invoice_id
from tests.postgrest.server import Fault

pytestmark = pytest.mark.postgres


def new_invoice(n):
    return {
        "id": invoice_id(n),
        "customer_id": "cus_Qe5",
        "amount_due": 990,
        "currency": "usd",
        "status": "open",
    }


def test_a_get_is_retried_on_503_and_520(invoices, no_retry_sleep):
    invoices.inject(Fault(method="GET", path="^/invoices", status=503))
    invoices.inject(Fault(method="GET", path="^/invoices", status=520))
    rows = invoices.client().table("invoices").select("id").execute().data
    assert len(rows) == 5
    attempts = invoices.requests_to("^/invoices", "GET")
    assert [r.status for r in attempts] == [503, 520, 200]
    assert [r.headers.get("x-retry-count") for r in attempts] == [None, "1", "2"]
    assert no_retry_sleep == [1, 2]  # the back-off postgrest-py would have slept


def test_retries_give_up_after_three(invoices, no_retry_sleep):
    invoices.inject(Fault(method="GET", path="^/invoices", status=503, times=10))
    with pytest.raises(APIError) as failed:
        invoices.client().table("invoices").select("id").execute()
    assert failed.value.code == "PGRST002"
    assert len(invoices.requests_to("^/invoices", "GET")) == 4


def test_a_post_is_never_retried(invoices, no_retry_sleep):
    invoices.inject(Fault(method="POST", path="^/invoices", status=503))
    with pytest.raises(APIError) as failed:
        invoices.client().table("invoices").insert(new_invoice(70)).execute()
    assert failed.value.code == "PGRST002"
    assert len(invoices.requests_to("^/invoices", "POST")) == 1
    assert invoices.sql("SELECT count(*) FROM invoices") == [(5,)]


def test_an_rpc_post_is_never_retried(invoices, no_retry_sleep):
    invoices.sql("CREATE FUNCTION ping() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    invoices.inject(Fault(path="^/rpc/ping", status=520))
    with pytest.raises(APIError) as failed:
        invoices.client().rpc("ping", {}).execute()
    assert failed.value.code == "520"  # an HTML page: postgrest-py falls back to the status
    assert len(invoices.requests_to("^/rpc/ping")) == 1


def test_no_client_retry_when_it_is_turned_off(invoices):
    invoices.inject(Fault(method="GET", status=503))
    with pytest.raises(APIError):
        invoices.client(retry=False).table("invoices").select("id").execute()
    assert len(invoices.requests) == 1


def test_a_dropped_connection_is_retried_on_get_and_raised_on_post(invoices, no_retry_sleep):
    invoices.inject(Fault(method="GET", path="^/invoices", drop=True))
    assert len(invoices.client().table("invoices").select("id").execute().data) == 5
    invoices.inject(Fault(method="POST", path="^/invoices", drop=True))
    with pytest.raises(httpx.RemoteProtocolError):  # not an APIError: there is no answer
        invoices.client().table("invoices").insert(new_invoice(71)).execute()
    assert invoices.sql("SELECT count(*) FROM invoices") == [(5,)]


def test_an_answer_lost_after_the_commit(invoices):
    """The write happened; the client cannot tell. Writes need their own idempotency."""
    invoices.inject(Fault(method="POST", path="^/invoices", drop=True, after_commit=True))
    with pytest.raises(httpx.RemoteProtocolError):
        invoices.client().table("invoices").insert(new_invoice(72)).execute()
    assert invoices.sql("SELECT count(*) FROM invoices WHERE id = %s", (invoice_id(72),)) == [(1,)]
    invoices.inject(Fault(method="POST", path="^/invoices", status=503, after_commit=True))
    with pytest.raises(APIError):
        invoices.client().table("invoices").insert(new_invoice(73)).execute()
    assert invoices.sql("SELECT count(*) FROM invoices WHERE id = %s", (invoice_id(73),)) == [(1,)]


def test_a_slow_answer_times_out_and_a_timeout_is_not_retried(invoices, no_retry_sleep):
    invoices.inject(Fault(method="GET", path="^/invoices", delay=0.5))
    with pytest.raises(httpx.ReadTimeout):
        invoices.client(timeout=0.1).table("invoices").select("id").execute()
    assert len(invoices.requests_to("^/invoices")) <= 1
    assert no_retry_sleep == []
