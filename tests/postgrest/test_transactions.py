"""One transaction per request: all or nothing, no lock or role outlives its request."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from postgrest.exceptions import APIError

from tests.postgrest.conftest import invoice_id, rest

pytestmark = pytest.mark.postgres

FUNCTIONS = """
CREATE FUNCTION pay_then_fail(p_id text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE invoices SET status = 'paid' WHERE id = p_id;
    INSERT INTO invoices (id, customer_id, amount_due, currency, status)
        VALUES ('in_refund_0000000000000001', 'cus_Qa1', 100, 'usd', 'open');
    RAISE EXCEPTION 'charge declined' USING DETAIL = 'card_declined';
END$$;
CREATE FUNCTION hold_invoice(p_id text, p_seconds float8) RETURNS text LANGUAGE sql AS $$
    SELECT id FROM invoices WHERE id = p_id FOR UPDATE;
    SELECT pg_sleep(p_seconds)::text;
    SELECT p_id$$;
CREATE FUNCTION whoami() RETURNS text LANGUAGE sql STABLE AS 'SELECT current_user';
"""


@pytest.fixture
def api(invoices):
    invoices.sql(FUNCTIONS)
    return invoices


def locked_elsewhere(standin, row_id):
    """Whether another session finds the invoice row locked."""
    with psycopg.connect(standin.database_url) as conn:
        try:
            conn.execute("SELECT 1 FROM invoices WHERE id = %s FOR UPDATE NOWAIT", (row_id,))
        except psycopg.errors.LockNotAvailable:
            return True
        return False


def test_a_failing_request_leaves_nothing(api):
    with pytest.raises(APIError) as failed:
        api.client().rpc("pay_then_fail", {"p_id": invoice_id(1)}).execute()
    assert (failed.value.code, failed.value.details) == ("P0001", "card_declined")
    assert api.sql("SELECT status FROM invoices WHERE id = %s", (invoice_id(1),)) == [("open",)]
    assert api.sql("SELECT count(*) FROM invoices") == [(5,)]


def test_a_lock_lives_exactly_as_long_as_its_request(api):
    client = api.client()
    worker = threading.Thread(
        target=lambda: client.rpc(
            "hold_invoice", {"p_id": invoice_id(2), "p_seconds": 0.6}
        ).execute()
    )
    worker.start()
    deadline = time.monotonic() + 5
    while not locked_elsewhere(api, invoice_id(2)):  # the request's transaction holds it...
        assert time.monotonic() < deadline, "the request never took its row lock"
        time.sleep(0.02)
    worker.join()
    assert not locked_elsewhere(api, invoice_id(2))  # ...and COMMIT released it


def test_role_and_settings_do_not_leak_across_requests_on_one_connection(api):
    api.resize_pool(1)  # every request on the same database connection
    assert api.client().rpc("whoami", {}).execute().data == "service_role"
    assert api.client(api.keys.anon).rpc("whoami", {}).execute().data == "anon"
    assert api.client().rpc("whoami", {}).execute().data == "service_role"


def test_a_busy_pool_answers_pgrst003_after_the_acquisition_timeout(api):
    api.resize_pool(1, timeout=0.2)
    slow = threading.Thread(
        target=lambda: rest(
            api, "POST", "/rpc/hold_invoice", json={"p_id": invoice_id(3), "p_seconds": 1.0}
        )
    )
    slow.start()
    time.sleep(0.3)  # the slow request holds the only connection
    response = rest(api, "GET", "/invoices?select=id")
    slow.join()
    assert response.status_code == 504
    assert response.json() == {
        "code": "PGRST003",
        "details": None,
        "hint": None,
        "message": "Timed out acquiring connection from connection pool.",
    }


def test_an_unreachable_database_is_pgrst000(api):
    api.pool.close()
    api.pool = type(api.pool)("postgresql://authenticator@127.0.0.1:1/none", 2, 1.0)
    response = rest(api, "GET", "/invoices")
    assert (response.status_code, response.json()["code"]) == (503, "PGRST000")
    assert response.json()["message"] == "Database connection error. Retrying the connection."


def test_sql_may_set_the_response_status_and_headers(api):
    api.sql(
        "CREATE FUNCTION accepted() RETURNS text LANGUAGE sql AS $$"
        "SELECT set_config('response.status', '202', true), "
        "set_config('response.headers', '[{\"Retry-After\": \"30\"}]', true); SELECT 'queued'$$"
    )
    response = rest(api, "POST", "/rpc/accepted")
    assert (response.status_code, response.json()) == (202, "queued")
    assert response.headers["retry-after"] == "30"
