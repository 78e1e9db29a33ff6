"""PostgREST's SQLSTATE → HTTP status table, row by row from the errors page."""

from __future__ import annotations

import pytest

from tests.postgrest.conftest import rest
from tests.postgrest.errors import sqlstate_status

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("08006", 503), ("09000", 500), ("0L000", 403), ("0P000", 403),
        ("23503", 409), ("23505", 409), ("25006", 405), ("25001", 500), ("28000", 403),
        ("2D000", 500), ("38000", 500), ("39000", 500), ("3B000", 500), ("40001", 500),
        ("40P01", 500), ("53400", 500), ("53300", 503), ("54000", 500), ("55P03", 500),
        ("57014", 500), ("57P01", 503), ("58030", 500), ("F0000", 500), ("HV000", 500),
        ("P0001", 400), ("P0002", 500), ("XX000", 500), ("42883", 404), ("42P01", 404),
        ("42P17", 500), ("23502", 400), ("23514", 400), ("22P02", 400), ("22001", 400),
        ("42703", 400), ("PT402", 402),
    ],
)  # fmt: skip
def test_the_status_of_each_sqlstate(sqlstate, status):
    assert sqlstate_status(sqlstate, "", authenticated=True) == status


def test_insufficient_privilege_depends_on_the_role():
    assert sqlstate_status("42501", "", authenticated=False) == 401  # anon
    assert sqlstate_status("42501", "", authenticated=True) == 403


def test_a_foreign_key_violation_is_409_with_postgres_own_words(postgrest):
    postgrest.sql(
        "CREATE TABLE customers (id text PRIMARY KEY);"
        "CREATE TABLE invoices (id text PRIMARY KEY, customer_id text REFERENCES customers)"
    )
    response = rest(
        postgrest,
        "POST",
        "/invoices",
        json={"id": "in_1QpL8HLkdIwHu7ixl4OzzPMv", "customer_id": "cus_QzzzzzZZ"},
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "23503"
    assert body["message"] == (
        'insert or update on table "invoices" violates foreign key constraint '
        '"invoices_customer_id_fkey"'
    )
    assert (
        body["details"] == 'Key (customer_id)=(cus_QzzzzzZZ) is not present in table "customers".'
    )
    assert response.headers["proxy-status"] == "PostgREST; error=23503"


def test_an_unknown_route_is_the_gateways_404(postgrest):
    response = rest(postgrest, "GET", "/../auth/v1/user")
    assert response.status_code == 404
