"""Shared fixtures: an isolated environment for every test, and stores on both backends."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from freezegun.api import FakeDatetime

from cloudgreet_billing.adapters.store.sqlite import _adapt_time
from cloudgreet_billing.config import variables
from tests.pg_cluster import start_cluster

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# sqlite3 picks adapters by exact type: without this, freezegun's datetime subclass would be
# stored as "2026-11-24 12:00:00+00:00" and compared as text against our "…T…Z" form.
sqlite3.register_adapter(FakeDatetime, _adapt_time)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the developer's variables, .env, or data directory."""
    for name in variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.setenv("BILLING_ACTOR", "tester@ci")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: CI's, or a throwaway cluster started here."""
    given = os.environ.get("BILLING_TEST_DATABASE_URL")
    if given:
        yield given
        return
    cluster = None
    try:
        cluster = start_cluster()
    except Exception as exc:  # a broken local install must not pass silently in CI
        if IN_CI:
            pytest.fail(f"cannot start PostgreSQL for the tests: {exc}")
        pytest.skip(f"cannot start PostgreSQL here: {exc}")
    if cluster is None:
        if IN_CI:
            pytest.fail("CI=true but no PostgreSQL: set BILLING_TEST_DATABASE_URL")
        pytest.skip("no PostgreSQL binaries on this machine")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the server, dropped after the test."""
    import psycopg

    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_server.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL on each backend; the schema is not installed yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/billing.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the CLI at a migrated store on each backend."""
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    monkeypatch.setenv("BILLING_DATABASE_URL", database_url)
    store = open_store(load_settings(), check_schema=False)
    store.migrate()
    store.close()
    return database_url


@pytest.fixture
def store(store_env: str) -> Iterator[object]:
    """A migrated store on each backend."""
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    opened = open_store(load_settings())
    yield opened
    opened.close()


# The PostgREST stand-in's fixtures (``postgrest``, ``supabase_db``, ``no_retry_sleep``).
from tests.postgrest.fixtures import (  # noqa: E402
    no_retry_sleep,  # noqa: F401
    postgrest,  # noqa: F401
    supabase_db,  # noqa: F401
    supabase_roles,  # noqa: F401
    supabase_store,  # noqa: F401
)
