"""Reads through the real supabase client: filters, order, ranges, the silent row cap."""

from __future__ import annotations

import pytest

from tests.postgrest.conftest import invoice_id, rest

pytestmark = pytest.mark.postgres


def ids(rows):
    return [row["id"][-1] for row in rows]


def test_horizontal_filters_compare_in_the_columns_type(invoices):
    table = invoices.client().table("invoices")
    assert ids(table.select("id").eq("status", "open").order("id").execute().data) == ["1", "3"]
    assert ids(table.select("id").neq("currency", "usd").order("id").execute().data) == [
        "3",
        "4",
        "5",
    ]
    # "1500" < "250" as text, not as bigint: the value is read as the column's type.
    assert ids(table.select("id").gt("amount_due", "1000").order("id").execute().data) == [
        "1",
        "2",
        "5",
    ]
    assert ids(table.select("id").lte("amount_due", 250).order("id").execute().data) == ["3", "4"]
    assert ids(
        table.select("id").gte("due_at", "2026-11-23T00:00:00Z").order("id").execute().data
    ) == [
        "4",
        "5",
    ]
    assert ids(table.select("id").lt("due_at", "2026-11-21 00:00:00+00").execute().data) == ["1"]
    assert ids(table.select("id").in_("status", ["void", "paid"]).order("id").execute().data) == [
        "2",
        "4",
    ]
    assert ids(table.select("id").is_("due_at", None).execute().data) == ["3"]
    assert ids(table.select("id").not_.is_("due_at", None).order("id").execute().data) == [
        "1",
        "2",
        "4",
        "5",
    ]
    assert ids(table.select("id").like("status", "un*").execute().data) == ["5"]
    assert ids(table.select("id").ilike("customer_id", "CUS_QB*").order("id").execute().data) == [
        "3",
        "4",
    ]
    assert ids(table.select("id").not_.eq("status", "open").order("id").execute().data) == [
        "2",
        "4",
        "5",
    ]


def test_or_and_nested_logic(invoices):
    table = invoices.client().table("invoices")
    rows = table.select("id").or_("status.eq.paid,and(currency.eq.eur,amount_due.gt.0)")
    assert ids(rows.order("id").execute().data) == ["2", "3"]
    quoted = table.select("id").or_('customer_id.eq."cus_Qc3",amount_due.in.(0,1500)')
    assert ids(quoted.order("id").execute().data) == ["1", "4", "5"]


def test_a_parameter_that_is_not_a_filter_is_ignored_on_a_table(invoices):
    # QueryParams.hs: "status=open" has no operator, so it is an RPC-style parameter, and a
    # table read ignores it. A typo'd filter therefore returns every row.
    response = rest(invoices, "GET", "/invoices?select=id&status=open")
    assert response.status_code == 200
    assert len(response.json()) == 5


def test_an_unknown_operator_is_pgrst100(invoices):
    response = rest(invoices, "GET", "/invoices?status=not.equals.open")
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST100"
    assert response.json()["message"].startswith('"failed to parse filter (not.equals.open)"')


def test_an_unknown_column_is_postgres_42703(invoices):
    response = rest(invoices, "GET", "/invoices?amount=gt.1")
    assert (response.status_code, response.json()["code"]) == (400, "42703")


def test_order_directions_and_nulls(invoices):
    table = invoices.client().table("invoices")
    assert (
        ids(table.select("id").order("due_at", desc=True).execute().data)[0] == "3"
    )  # NULLS FIRST
    assert ids(table.select("id").order("due_at", desc=True, nullsfirst=False).execute().data) == [
        "5",
        "4",
        "2",
        "1",
        "3",
    ]
    assert ids(table.select("id").order("due_at", nullsfirst=True).execute().data) == [
        "3",
        "1",
        "2",
        "4",
        "5",
    ]
    two_keys = table.select("id").order("customer_id", desc=True).order("amount_due")
    assert ids(two_keys.execute().data) == ["5", "4", "3", "1", "2"]


def test_select_renames_casts_and_reads_json_paths(invoices):
    invoices.sql('UPDATE invoices SET metadata = \'{"plan": {"tier": "pro"}, "seats": 3}\'')
    row = (
        invoices.client()
        .table("invoices")
        .select("invoice:id,amount_due::text,metadata->plan->>tier,metadata->seats")
        .eq("id", invoice_id(1))
        .execute()
        .data[0]
    )
    assert row == {"invoice": invoice_id(1), "amount_due": "1500", "tier": "pro", "seats": 3}


def test_json_shapes_are_postgres_own(invoices):
    row = invoices.client().table("invoices").select("*").eq("id", invoice_id(3)).execute().data[0]
    assert row == {
        "id": invoice_id(3),
        "customer_id": "cus_Qb2",
        "amount_due": 250,
        "currency": "eur",
        "status": "open",
        "due_at": None,
        "metadata": {},
        "created_at": "2026-11-24T12:00:00+00:00",  # to_json of timestamptz, in UTC
    }


def test_limit_offset_and_the_range_header(invoices):
    table = invoices.client().table("invoices")
    assert ids(table.select("id").order("id").range(1, 2).execute().data) == ["2", "3"]
    assert ids(table.select("id").order("id").limit(2).offset(3).execute().data) == ["4", "5"]
    response = rest(
        invoices,
        "GET",
        "/invoices?select=id&order=id",
        headers={"Range-Unit": "items", "Range": "1-3"},
    )
    assert response.status_code == 200
    assert response.headers["content-range"] == "1-3/*"
    assert [r["id"][-1] for r in response.json()] == ["2", "3", "4"]
    bad = rest(invoices, "GET", "/invoices", headers={"Range": "3-1"})
    assert (bad.status_code, bad.json()["code"]) == (416, "PGRST103")


def test_every_read_says_its_range_and_a_count_makes_it_206(invoices):
    plain = rest(invoices, "GET", "/invoices?select=id&limit=2")
    assert (plain.status_code, plain.headers["content-range"]) == (200, "0-1/*")
    counted = rest(
        invoices, "GET", "/invoices?select=id&limit=2", headers={"Prefer": "count=exact"}
    )
    assert (counted.status_code, counted.headers["content-range"]) == (206, "0-1/5")
    whole = rest(invoices, "GET", "/invoices?select=id", headers={"Prefer": "count=exact"})
    assert (whole.status_code, whole.headers["content-range"]) == (200, "0-4/5")
    empty = rest(invoices, "GET", "/invoices?status=eq.draft", headers={"Prefer": "count=exact"})
    assert (empty.status_code, empty.headers["content-range"]) == (200, "*/0")
    past = rest(invoices, "GET", "/invoices?offset=9", headers={"Prefer": "count=exact"})
    assert past.status_code == 416
    assert past.json()["details"] == "An offset of 9 was requested, but there are only 5 rows."


def test_the_client_reads_the_count_from_content_range(invoices):
    result = invoices.client().table("invoices").select("id", count="exact").eq("currency", "eur")
    assert result.execute().count == 2


@pytest.fixture
def ledger(postgrest):
    """2,500 ledger rows: more than the 1,000-row cap."""
    postgrest.sql(
        # No autovacuum: the statistics stay what ANALYZE says, for the planned counts.
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount bigint NOT NULL) "
        "WITH (autovacuum_enabled = false);"
        "INSERT INTO ledger SELECT n, n * 10 FROM generate_series(1, 2500) n;"
        "ANALYZE ledger"
    )
    return postgrest


def test_the_cap_is_silent_without_a_count(ledger):
    response = rest(ledger, "GET", "/ledger?select=id&order=id")
    assert response.status_code == 200  # no error, no hint that rows are missing
    assert len(response.json()) == 1000
    assert response.headers["content-range"] == "0-999/*"
    # Asking for more than the cap changes nothing: limit=5000 is capped too.
    assert len(ledger.client().table("ledger").select("id").limit(5000).execute().data) == 1000


def test_the_cap_with_a_count_is_206_and_says_the_total(ledger):
    result = ledger.client().table("ledger").select("id", count="exact").order("id").execute()
    assert (len(result.data), result.count) == (1000, 2500)
    response = rest(ledger, "GET", "/ledger?select=id", headers={"Prefer": "count=exact"})
    assert (response.status_code, response.headers["content-range"]) == (206, "0-999/2500")


def test_a_pager_that_stops_at_the_first_short_page_loses_rows(ledger):
    """Pages of 1,500 come back with 1,000 rows: "short", so a naive pager stops early."""
    table = ledger.client().table("ledger")
    first = table.select("id").order("id").range(0, 1499).execute().data
    assert len(first) == 1000  # the pager thinks this was the last page...
    second = table.select("id").order("id").range(1500, 2999).execute().data
    assert len(second) == 1000  # ...and rows 1,001-1,500 are never read


def test_keyset_paging_under_the_cap_reads_every_row(ledger):
    table = ledger.client().table("ledger")
    seen, last = [], 0
    while True:
        page = table.select("id").gt("id", last).order("id").limit(1000).execute().data
        seen.extend(row["id"] for row in page)
        if len(page) < 1000:
            break
        last = page[-1]["id"]
    assert seen == list(range(1, 2501))


def test_planned_and_estimated_counts(ledger):
    planned = rest(ledger, "GET", "/ledger?select=id&limit=10", headers={"Prefer": "count=planned"})
    assert planned.status_code == 206
    assert planned.headers["content-range"] == "0-9/2500"  # ANALYZEd: the estimate is exact
    ledger.sql("CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small VALUES (1), (2), (3)")
    estimated = rest(ledger, "GET", "/small?limit=1", headers={"Prefer": "count=estimated"})
    assert estimated.headers["content-range"] == "0-0/3"  # under db-max-rows: exact
    ledger.sql("DELETE FROM ledger WHERE id > 2000")  # the statistics still say 2,500
    over = rest(ledger, "GET", "/ledger?limit=1", headers={"Prefer": "count=estimated"})
    # Past the cap: the larger of the capped exact count (1,001) and the planner's estimate.
    assert over.headers["content-range"] == "0-0/2500"
    exact = rest(ledger, "GET", "/ledger?limit=1", headers={"Prefer": "count=exact"})
    assert exact.headers["content-range"] == "0-0/2000"


def test_max_rows_is_configurable(ledger):
    ledger.max_rows = 50
    assert len(ledger.client().table("ledger").select("id").execute().data) == 50


def test_a_single_object_is_406_unless_exactly_one_row(invoices):
    table = invoices.client().table("invoices")
    assert table.select("id").eq("id", invoice_id(2)).single().execute().data["id"] == invoice_id(2)
    response = rest(
        invoices,
        "GET",
        "/invoices?status=eq.open",
        headers={"Accept": "application/vnd.pgrst.object+json"},
    )
    assert (response.status_code, response.json()["code"]) == (406, "PGRST116")
    assert response.json()["details"] == "The result contains 2 rows"


def test_head_returns_the_count_and_no_body(invoices):
    result = invoices.client().table("invoices").select("*", count="exact", head=True).execute()
    assert result.count == 5
