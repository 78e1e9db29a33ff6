"""Writes through the real supabase client: insert, upsert, update, delete, their answers."""

from __future__ import annotations

import pytest
from postgrest.exceptions import APIError

from tests.postgrest.conftest import invoice_id, rest

pytestmark = pytest.mark.postgres


def invoice(n, **fields):
    row = {
        "id": invoice_id(n),
        "customer_id": "cus_Qd4",
        "amount_due": 4200,
        "currency": "usd",
        "status": "open",
    }
    return {**row, **fields}


def count(standin, row_id=None):
    if row_id is None:
        return standin.sql("SELECT count(*) FROM invoices")[0][0]
    return standin.sql("SELECT count(*) FROM invoices WHERE id = %s", (row_id,))[0][0]


def test_insert_one_object_returns_it_with_its_defaults(invoices):
    data = invoices.client().table("invoices").insert(invoice(10)).execute().data
    assert data == [
        {**invoice(10), "due_at": None, "metadata": {}, "created_at": "2026-11-24T12:00:00+00:00"}
    ]
    assert invoices.requests_to("^/invoices$", "POST")[-1].status == 201


def test_insert_minimal_answers_201_with_no_body(invoices):
    response = rest(
        invoices, "POST", "/invoices", json=invoice(11), headers={"Prefer": "return=minimal"}
    )
    assert (response.status_code, response.content) == (201, b"")
    assert response.headers["content-range"] == "*/*"
    assert count(invoices, invoice_id(11)) == 1


def test_a_bulk_insert_is_one_statement_all_or_nothing(invoices):
    rows = [invoice(20), invoice(21, currency="USD"), invoice(22)]  # the middle one is bad
    with pytest.raises(APIError) as failed:
        invoices.client().table("invoices").insert(rows).execute()
    assert failed.value.code == "23514"  # check_violation, HTTP 400
    assert count(invoices) == 5  # nothing of the batch was written


def test_a_duplicate_key_is_409_23505(invoices):
    with pytest.raises(APIError) as failed:
        invoices.client().table("invoices").insert(invoice(1)).execute()
    assert failed.value.code == "23505"
    assert failed.value.message == 'duplicate key value violates unique constraint "invoices_pkey"'
    assert failed.value.details == f"Key (id)=({invoice_id(1)}) already exists."
    assert invoices.requests_to("^/invoices$", "POST")[-1].status == 409


def test_columns_sent_by_the_client_make_a_missing_key_null_not_default(invoices):
    """postgrest-py sends ``columns=`` for a list: a key missing from one row is NULL."""
    rows = [invoice(30, metadata={"source": "import"}), invoice(31)]
    with pytest.raises(APIError) as failed:
        invoices.client().table("invoices").insert(rows).execute()
    assert failed.value.code == "23502"  # NOT NULL metadata: NULL was inserted, not '{}'
    kept = invoices.client().table("invoices").insert(rows, default_to_null=False).execute()
    assert [r["metadata"] for r in kept.data] == [{"source": "import"}, {}]


def test_unknown_payload_key_is_pgrst204(invoices):
    with pytest.raises(APIError) as failed:
        invoices.client().table("invoices").insert(invoice(40, amount=1)).execute()
    assert failed.value.code == "PGRST204"
    assert failed.value.message == (
        "Could not find the 'amount' column of 'invoices' in the schema cache"
    )


def test_objects_of_a_bulk_insert_need_the_same_keys_without_columns(invoices):
    response = rest(invoices, "POST", "/invoices", json=[invoice(41), {"id": invoice_id(42)}])
    assert (response.status_code, response.json()["code"]) == (400, "PGRST102")
    assert response.json()["message"] == "All object keys must match"


def test_upsert_merges_on_the_primary_key_and_answers_201_or_200(invoices):
    table = invoices.client().table("invoices")
    table.upsert([invoice(1, status="paid"), invoice(50)]).execute()
    assert invoices.requests_to("^/invoices$", "POST")[-1].status == 201  # one row was new
    status = invoices.sql("SELECT status FROM invoices WHERE id = %s", (invoice_id(1),))
    assert status == [("paid",)]
    table.upsert(invoice(50, amount_due=1)).execute()
    assert invoices.requests_to("^/invoices$", "POST")[-1].status == 200  # nothing inserted
    assert count(invoices) == 6


def test_upsert_ignore_duplicates_on_another_unique_key(invoices):
    invoices.sql("CREATE UNIQUE INDEX invoices_customer_status ON invoices (customer_id, status)")
    table = invoices.client().table("invoices")
    result = table.upsert(
        [invoice(60, customer_id="cus_Qa1", status="open"), invoice(61, customer_id="cus_Qz9")],
        on_conflict="customer_id,status",
        ignore_duplicates=True,
    ).execute()
    assert [r["id"] for r in result.data] == [invoice_id(61)]  # the duplicate was skipped
    assert count(invoices) == 6


def test_update_with_filters_returns_the_changed_rows(invoices):
    table = invoices.client().table("invoices")
    changed = table.update({"status": "paid"}).eq("customer_id", "cus_Qb2").eq("status", "open")
    data = changed.execute().data
    assert [r["id"] for r in data] == [invoice_id(3)]
    assert data[0]["status"] == "paid"
    response = rest(
        invoices,
        "PATCH",
        "/invoices?status=eq.paid",
        json={"status": "void"},
        headers={"Prefer": "return=minimal,count=exact"},
    )
    assert (response.status_code, response.headers["content-range"]) == (204, "0-1/2")


def test_delete_with_filters(invoices):
    table = invoices.client().table("invoices")
    deleted = table.delete().in_("status", ["void", "uncollectible"]).execute().data
    assert sorted(r["id"] for r in deleted) == [invoice_id(4), invoice_id(5)]
    assert count(invoices) == 3
    response = rest(invoices, "DELETE", "/invoices?id=eq.in_nothing")
    assert response.status_code == 204


def test_a_write_in_a_get_is_refused_by_the_read_only_transaction(invoices):
    invoices.sql(
        "CREATE SEQUENCE reads_seen; CREATE VIEW counted AS SELECT nextval('reads_seen') AS n"
    )
    response = rest(invoices, "GET", "/counted")
    # Transactions doc, "Access Mode": GET runs READ ONLY, so nextval() fails with 25006.
    assert (response.status_code, response.json()["code"]) == (405, "25006")
