"""The store contract suite runs on every backend: SQLite, PostgreSQL, and the Supabase
REST store through the PostgREST stand-in (the real ``supabase`` client over HTTP, each
request one transaction on the real test PostgreSQL). Tests of the SQL stores' own
statements (query plans) take ``sql_store``: SQLite and PostgreSQL only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

BACKENDS = ["sqlite", "postgres", "supabase"]


def _open_sql_store(request: pytest.FixtureRequest) -> Iterator[object]:
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    request.getfixturevalue("monkeypatch").setenv(
        "BILLING_DATABASE_URL",
        f"sqlite:///{request.getfixturevalue('tmp_path')}/billing.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url"),
    )
    setup = open_store(load_settings(), check_schema=False)
    setup.migrate()
    setup.close()
    opened = open_store(load_settings())
    yield opened
    opened.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[object]:
    if request.param == "supabase":
        yield request.getfixturevalue("supabase_store")
        return
    yield from _open_sql_store(request)


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest) -> Iterator[object]:
    yield from _open_sql_store(request)
