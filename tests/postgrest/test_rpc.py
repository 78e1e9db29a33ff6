"""Functions through ``.rpc()``: named arguments cast to the parameter types, overloads,
result shapes, the row cap, errors."""

from __future__ import annotations

import httpx
import pytest
from postgrest.exceptions import APIError

from tests.postgrest.conftest import invoice_id, rest

pytestmark = pytest.mark.postgres

FUNCTIONS = """
CREATE FUNCTION add_them(a integer, b integer) RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION open_total(p_customer text) RETURNS bigint
    LANGUAGE sql STABLE AS $$SELECT coalesce(sum(amount_due), 0) FROM invoices
                             WHERE customer_id = p_customer AND status = 'open'$$;
CREATE FUNCTION open_total(p_customer text, p_currency text) RETURNS bigint
    LANGUAGE sql STABLE AS $$SELECT coalesce(sum(amount_due), 0) FROM invoices
                             WHERE customer_id = p_customer AND currency = p_currency$$;
CREATE FUNCTION due_invoices(p_as_of timestamptz DEFAULT '2026-11-30T00:00:00Z',
                             p_currencies text[] DEFAULT NULL) RETURNS SETOF invoices
    LANGUAGE sql STABLE AS $$SELECT * FROM invoices WHERE due_at <= p_as_of
                             AND (p_currencies IS NULL OR currency = ANY(p_currencies))$$;
CREATE FUNCTION latest_invoice(p_customer text) RETURNS invoices
    LANGUAGE sql STABLE AS $$SELECT * FROM invoices WHERE customer_id = p_customer
                             ORDER BY id DESC LIMIT 1$$;
CREATE FUNCTION customer_ids() RETURNS SETOF text
    LANGUAGE sql STABLE AS 'SELECT DISTINCT customer_id FROM invoices ORDER BY 1';
CREATE FUNCTION counts_by_status() RETURNS TABLE (status text, n bigint)
    LANGUAGE sql STABLE AS 'SELECT status, count(*) FROM invoices GROUP BY 1 ORDER BY 1';
CREATE FUNCTION mark_paid(p_id text, p_paid_at timestamptz) RETURNS void
    LANGUAGE sql AS $$UPDATE invoices SET status = 'paid', due_at = p_paid_at WHERE id = p_id$$;
CREATE FUNCTION batch_amount(json) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$SELECT sum((x->>'amount')::bigint)
                               FROM json_array_elements($1->'items') x$$;
CREATE FUNCTION record_batch(p_rows jsonb) RETURNS integer
    LANGUAGE sql AS $$SELECT jsonb_array_length(p_rows)$$;
CREATE FUNCTION series(n integer) RETURNS SETOF integer
    LANGUAGE sql IMMUTABLE AS 'SELECT generate_series(1, n)';
CREATE FUNCTION whoami() RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'current_user', current_user, 'session_user', session_user,
        'role_claim', current_setting('request.jwt.claims', true)::json->>'role',
        'method', current_setting('request.method', true),
        'path', current_setting('request.path', true),
        'user_agent', current_setting('request.headers', true)::json->>'user-agent',
        'search_path', current_setting('search_path'),
        'timeout', current_setting('statement_timeout'),
        'read_only', current_setting('transaction_read_only'))$$;
"""


@pytest.fixture
def api(invoices):
    invoices.sql(FUNCTIONS)
    return invoices


def test_named_arguments_are_cast_to_the_parameter_types(api):
    client = api.client()
    assert client.rpc("add_them", {"a": 40, "b": "2"}).execute().data == 42
    assert client.rpc("add_them", {"a": 1, "b": 2}, get=True).execute().data == 3
    with pytest.raises(APIError) as failed:
        client.rpc("add_them", {"a": 1, "b": "two"}).execute()
    assert failed.value.code == "22P02"  # invalid_text_representation, HTTP 400
    assert failed.value.message == 'invalid input syntax for type integer: "two"'


def test_overloads_are_told_apart_by_argument_names(api):
    client = api.client()
    assert client.rpc("open_total", {"p_customer": "cus_Qa1"}).execute().data == 1500
    both = {"p_customer": "cus_Qa1", "p_currency": "usd"}
    assert client.rpc("open_total", both).execute().data == 11400


def test_defaults_may_be_left_out_and_arrays_are_json_arrays(api):
    client = api.client()
    due = client.rpc("due_invoices", {}).execute().data
    assert sorted(r["id"] for r in due) == [invoice_id(n) for n in (1, 2, 4, 5)]
    euros = client.rpc("due_invoices", {"p_currencies": ["eur"]}).execute().data
    assert [r["id"] for r in euros] == [invoice_id(4)]
    # A set of rows takes the same filters, order and limits as a table (Table-Valued).
    filtered = client.rpc("due_invoices", {}).gt("amount_due", 1000).order("amount_due").execute()
    assert [r["amount_due"] for r in filtered.data] == [1500, 9900, 120000]


def test_result_shapes(api):
    client = api.client()
    latest = client.rpc("latest_invoice", {"p_customer": "cus_Qb2"}).execute().data
    assert isinstance(latest, dict) and latest["id"] == invoice_id(4)  # a single composite
    assert client.rpc("latest_invoice", {"p_customer": "cus_none"}).execute().data["id"] is None
    assert client.rpc("customer_ids").execute().data == ["cus_Qa1", "cus_Qb2", "cus_Qc3"]
    table = client.rpc("counts_by_status").execute().data
    assert table[0] == {"status": "open", "n": 2}


def test_a_void_function_answers_204(api):
    response = rest(
        api,
        "POST",
        "/rpc/mark_paid",
        json={"p_id": invoice_id(1), "p_paid_at": "2026-11-25T09:30:00Z"},
    )
    assert (response.status_code, response.content) == (204, b"")
    assert api.sql("SELECT status, due_at::text FROM invoices WHERE id = %s", (invoice_id(1),)) == [
        ("paid", "2026-11-25 09:30:00+00")
    ]


def test_a_single_unnamed_json_parameter_takes_the_whole_body(api):
    body = {"items": [{"amount": 1500}, {"amount": 250}]}
    assert api.client().rpc("batch_amount", body).execute().data == 1750


def test_prefer_params_single_object_passes_the_body_to_one_json_parameter(api):
    response = rest(
        api,
        "POST",
        "/rpc/record_batch",
        json=[{"a": 1}, {"a": 2}, {"a": 3}],
        headers={"Prefer": "params=single-object"},
    )
    assert response.json() == 3
    named = api.client().rpc("record_batch", {"p_rows": [{"a": 1}]}).execute()
    assert named.data == 1


def test_a_missing_function_is_pgrst202_worded_as_postgrest_words_it(api):
    with pytest.raises(APIError) as failed:
        api.client().rpc("claim_due_steps", {"p_limit": 10, "p_owner": "w1"}).execute()
    error = failed.value
    assert error.code == "PGRST202"
    assert error.message == (
        "Could not find the function public.claim_due_steps(p_limit, p_owner) in the schema cache"
    )
    assert error.details == (
        "Searched for the function public.claim_due_steps with parameters p_limit, p_owner or "
        "with a single unnamed json/jsonb parameter, but no matches were found in the schema "
        "cache."
    )
    assert error.hint is None
    assert api.requests_to("/rpc/claim_due_steps")[-1].status == 404


def test_pgrst202_hints_at_a_close_name_or_parameter_list(api):
    with pytest.raises(APIError) as typo:
        api.client().rpc("add_them_", {"a": 1, "b": 2}).execute()
    assert typo.value.hint == "Perhaps you meant to call the function public.add_them"
    with pytest.raises(APIError) as wrong_args:
        api.client().rpc("add_them", {"a": 1, "c": 2}).execute()
    assert wrong_args.value.hint == "Perhaps you meant to call the function public.add_them(a, b)"


def test_ambiguous_overloads_are_pgrst203(api):
    api.sql(
        "CREATE FUNCTION pick(x integer) RETURNS int LANGUAGE sql AS 'SELECT 1';"
        "CREATE FUNCTION pick(x text) RETURNS int LANGUAGE sql AS 'SELECT 2'"
    )
    response = rest(api, "POST", "/rpc/pick", json={"x": 1})
    assert (response.status_code, response.json()["code"]) == (300, "PGRST203")


def test_a_set_returning_function_is_capped_like_a_table(api):
    rows = api.client().rpc("series", {"n": 2500}).execute().data
    assert len(rows) == 1000 and rows[-1] == 1000  # silently
    counted = rest(api, "POST", "/rpc/series", json={"n": 2500}, headers={"Prefer": "count=exact"})
    assert (counted.status_code, counted.headers["content-range"]) == (206, "0-999/2500")


def test_stable_functions_run_read_only_even_on_post(api):
    api.sql(
        "CREATE SEQUENCE calls; CREATE FUNCTION sneaky() RETURNS bigint LANGUAGE sql "
        "STABLE AS $$SELECT nextval('calls')$$"
    )
    response = rest(api, "POST", "/rpc/sneaky")
    assert (response.status_code, response.json()["code"]) == (405, "25006")
    volatile_by_get = rest(api, "GET", f"/rpc/mark_paid?p_id={invoice_id(1)}&p_paid_at=2026-11-25")
    assert (volatile_by_get.status_code, volatile_by_get.json()["code"]) == (405, "25006")


def test_raise_maps_to_400_or_the_pt_status(api):
    api.sql(
        "CREATE FUNCTION refuse() RETURNS void LANGUAGE plpgsql AS $$BEGIN "
        "RAISE EXCEPTION 'invoice is locked' USING DETAIL = 'being charged', HINT = 'retry'; "
        "END$$;"
        "CREATE FUNCTION pay_first() RETURNS void LANGUAGE plpgsql AS $$BEGIN "
        "RAISE sqlstate 'PT402' USING message = 'Payment Required'; END$$"
    )
    refused = rest(api, "POST", "/rpc/refuse")
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "P0001",
        "message": "invoice is locked",
        "details": "being charged",
        "hint": "retry",
    }
    assert rest(api, "POST", "/rpc/pay_first").status_code == 402


def test_each_request_runs_as_its_role_with_postgrest_settings(api):
    seen = api.client().rpc("whoami", {}).execute().data
    assert seen == {
        "current_user": "service_role",
        "session_user": "authenticator",
        "role_claim": "service_role",
        "method": "POST",
        "path": "/rpc/whoami",
        "user_agent": f"python-httpx/{httpx.__version__}",
        "search_path": '"public", "extensions"',
        "timeout": "8s",  # service_role has none: the authenticator's 8 s applies
        "read_only": "on",  # a STABLE function
    }
    anon = api.client(api.keys.anon).rpc("whoami", {}, get=True).execute().data
    assert (anon["current_user"], anon["timeout"], anon["method"]) == ("anon", "3s", "GET")


def test_a_function_setting_statement_timeout_is_hoisted(api):
    api.sql(
        "CREATE FUNCTION slow() RETURNS int LANGUAGE sql SET statement_timeout = '100ms' "
        "AS 'SELECT 1 FROM pg_sleep(1)'"
    )
    response = rest(api, "POST", "/rpc/slow")
    assert response.status_code == 500
    assert response.json()["code"] == "57014"
    assert response.json()["message"] == "canceling statement due to statement timeout"
