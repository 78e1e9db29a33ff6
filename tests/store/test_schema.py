"""The PostgreSQL/Supabase migration and the SQLite DDL describe the same schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from cloudgreet_billing.adapters.store.migrations import (
    LATEST_SCHEMA_VERSION,
    postgres_migrations,
    sqlite_migrations,
)
from cloudgreet_billing.adapters.store.protocol import TABLES
from cloudgreet_billing.adapters.store.sqlite import SqliteStore, _statements

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "CREATE_BILLING_INFRASTRUCTURE.sql"


def sqlite_columns(path: Path) -> dict[str, list[str]]:
    store = SqliteStore(path)
    store.migrate()
    store.close()
    with sqlite3.connect(path) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'billing_%'"
            )
        ]
        return {
            table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for table in tables
        }


def postgres_columns(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name LIKE 'billing_%' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def run_sql_files(url: str) -> None:
    """Execute every migration file in order as psql would: each whole text, through the
    simple query protocol."""
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in postgres_migrations():
            conn.execute(migration.path.read_text(encoding="utf-8").encode())


def ledger_index_names_on_postgres(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'billing_usage_ledger' "
            "AND indexname <> 'billing_usage_ledger_pkey'"
        ).fetchall()
    return {row[0] for row in rows}


def ledger_index_names_on_sqlite(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'billing_usage_ledger'"
        ).fetchall()
    return {row[0] for row in rows}


@pytest.mark.postgres
def test_sqlite_and_postgres_have_the_same_tables_and_columns(tmp_path, postgres_url):
    run_sql_files(postgres_url)
    on_sqlite = sqlite_columns(tmp_path / "parity.db")
    on_postgres = postgres_columns(postgres_url)
    assert set(on_sqlite) == set(TABLES)
    assert on_sqlite == on_postgres
    assert ledger_index_names_on_sqlite(tmp_path / "parity.db") == ledger_index_names_on_postgres(
        postgres_url
    )


@pytest.mark.postgres
def test_the_migration_runs_cleanly_twice_on_plain_postgres(postgres_url):
    run_sql_files(postgres_url)
    run_sql_files(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute(
            "SELECT version FROM billing_schema_version ORDER BY version"
        ).fetchall()
    assert versions == [(version,) for version in range(1, LATEST_SCHEMA_VERSION + 1)]


@pytest.mark.postgres
def test_every_billing_table_has_row_level_security(postgres_url):
    run_sql_files(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class "
            "WHERE relkind = 'r' AND relname LIKE 'billing_%'"
        ).fetchall()
    assert {name for name, _ in rows} == set(TABLES)
    assert all(enabled for _, enabled in rows), rows


@pytest.mark.postgres
def test_supabase_api_roles_get_no_access(postgres_url):
    """On Supabase, anon and authenticated exist and get default grants on new tables."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE {role} NOLOGIN")
            conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {role}")
            conn.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {role}"
            )
    run_sql_files(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        for role in ("anon", "authenticated"):
            for table in TABLES:
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                    granted = conn.execute(
                        "SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)
                    ).fetchone()
                    assert granted == (False,), (role, table, privilege)
            granted = conn.execute(
                "SELECT has_sequence_privilege(%s, 'billing_alerts_id_seq', 'USAGE')", (role,)
            ).fetchone()
            assert granted == (False,)


@pytest.mark.postgres
def test_constraints_guard_the_invariants(postgres_url):
    run_sql_files(postgres_url)
    bad_rows = [
        (
            "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, occurred_at) "
            "VALUES ('cus_1', 'refund', 1, 'usd', now())"
        ),
        (
            "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, occurred_at) "
            "VALUES ('cus_1', 'booking_fee', 1, 'USD', now())"
        ),
        (
            "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, occurred_at) "
            "VALUES ('cus_1', 'booking_fee', -1, 'usd', now())"
        ),
    ]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in bad_rows:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, occurred_at, "
            "external_id) VALUES ('cus_1', 'credit_adjustment', -1, 'usd', now(), 'e1')"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, "
                "occurred_at, external_id) VALUES ('cus_1', 'booking_fee', 1, 'usd', now(), 'e1')"
            )
        step = (
            "INSERT INTO billing_dunning_events (invoice_id, customer_id, day, channel, template, "
            "due_at) VALUES ('in_1', 'cus_1', 0, 'email', 'day0_email', now())"
        )
        conn.execute(step)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(step)
        event = (
            "INSERT INTO billing_stripe_events (id, type, stripe_created, outcome, source) "
            "VALUES ('evt_1', 'invoice.paid', now(), 'applied', 'api')"
        )
        conn.execute(event)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(event)


def test_sqlite_enforces_the_same_invariants(tmp_path):
    store = SqliteStore(tmp_path / "c.db")
    store.migrate()
    store.close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        for kind, amount, currency in [
            ("refund", 1, "usd"),
            ("booking_fee", 1, "USD"),
            ("booking_fee", -1, "usd"),
        ]:
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(
                    "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, "
                    "occurred_at, created_at) VALUES ('cus_1', ?, ?, ?, 'x', 'x')",
                    (kind, amount, currency),
                )


def test_the_database_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "nested" / "billing.db"
    SqliteStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_migration_lists_agree_on_the_latest_version():
    assert postgres_migrations()[-1].version == LATEST_SCHEMA_VERSION
    assert sqlite_migrations()[-1].version == LATEST_SCHEMA_VERSION
    assert postgres_migrations()[0].path == MIGRATION


def test_sqlite_migration_2_keeps_every_ledger_row_and_its_key(tmp_path):
    path = tmp_path / "v1.db"
    store = SqliteStore(path)
    version_1, version_2 = sqlite_migrations()[:2]
    with store._transaction():
        for statement in _statements(version_1.path.read_text(encoding="utf-8")):
            store._conn.execute(statement)
        store._conn.execute(
            "INSERT INTO billing_schema_version (version, name, applied_at) VALUES (1, 'v1', 'x')"
        )
        for n in (3, 7, 12):
            store._conn.execute(
                "INSERT INTO billing_usage_ledger (id, customer_id, kind, amount, currency, "
                "occurred_at, external_id, created_at) VALUES (?, 'cus_1', 'booking_fee', ?, "
                "'usd', 'x', ?, 'x')",
                (n, n * 100, f"e{n}"),
            )
    assert store.migrate()[:1] == [2]
    store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, amount, external_id FROM billing_usage_ledger").fetchall()
        assert rows == [(3, 300, "e3"), (7, 700, "e7"), (12, 1200, "e12")]
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, "
                "occurred_at, external_id, created_at) VALUES ('cus_1', 'booking_fee', 1, "
                "'usd', 'x', 'e7', 'x')"
            )
    assert ledger_index_names_on_sqlite(path) == {
        "billing_usage_ledger_external_key",
        "billing_usage_ledger_occurred_idx",
        "billing_usage_ledger_customer_idx",
        "billing_usage_ledger_invoice_idx",
    }
    assert version_2.name == "0002_ledger_external_key"


@pytest.mark.postgres
def test_postgres_migration_2_turns_the_external_id_constraint_into_the_named_key(postgres_url):
    run_sql_files(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        constraints = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'billing_usage_ledger'::regclass "
            "AND contype = 'u'"
        ).fetchall()
        definition = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'billing_usage_ledger_external_key'"
        ).fetchone()
    assert constraints == []
    assert definition is not None and "UNIQUE" in definition[0]
