"""The PostgreSQL/Supabase migration and the SQLite DDL describe the same schema."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from cloudgreet_billing.adapters.store.migrations import (
    LATEST_SCHEMA_VERSION,
    STAGING_TABLES,
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
    # The Supabase REST store's staging tables exist on PostgreSQL only.
    assert set(on_postgres) - set(on_sqlite) == set(STAGING_TABLES)
    assert on_sqlite == {table: on_postgres[table] for table in TABLES}
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
    assert versions == [(migration.version,) for migration in postgres_migrations()]


@pytest.mark.postgres
def test_every_billing_table_has_row_level_security(postgres_url):
    run_sql_files(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class "
            "WHERE relkind = 'r' AND relname LIKE 'billing_%'"
        ).fetchall()
    assert {name for name, _ in rows} == set(TABLES) | set(STAGING_TABLES)
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
            for table in (*TABLES, *STAGING_TABLES):
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
    # The default location's folder is made on first use (private too); a folder named
    # in BILLING_DATABASE_URL must exist (tests/cli/test_store_safety.py).
    path = tmp_path / "nested" / "billing.db"
    SqliteStore(path, create_folder=True).close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
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
    assert store.migrate() == [migration.version for migration in sqlite_migrations()[1:]]
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


V1_ROWS = (
    "INSERT INTO billing_invoices (id, customer_id, status, currency, raw, stripe_created, "
    "stripe_updated_at, synced_at) VALUES ('in_1QpL8HLkdIwHu7ixl4OzzPMv', 'cus_RkS5AtmBK5hCeq', "
    "'open', 'usd', ?, ?, ?, ?)",
    "INSERT INTO billing_alerts (id, type, status, dedupe_key, invoice_id, created_at, "
    "updated_at) VALUES (7, 'invoice_failed', 'open', 'invoice_failed:in_1', "
    "'in_1QpL8HLkdIwHu7ixl4OzzPMv', ?, ?)",
    "INSERT INTO billing_alert_notes (alert_id, author, body, created_at) "
    "VALUES (7, 'ops', 'called them', ?)",
    "INSERT INTO billing_dunning_events (id, invoice_id, customer_id, alert_id, day, channel, "
    "template, status, due_at, attempts, created_at, updated_at) VALUES "
    "(3, 'in_1QpL8HLkdIwHu7ixl4OzzPMv', 'cus_RkS5AtmBK5hCeq', 7, 0, 'email', 'day0_email', "
    "'needs_review', ?, 1, ?, ?)",
)
#: What Stripe copied onto the invoice when it was finalized (2026-03-02T09:00:00Z).
V1_RAW = (
    '{"id": "in_1QpL8HLkdIwHu7ixl4OzzPMv", "customer_email": "ops@brightsmile.example", '
    '"customer_phone": null, "customer_name": "Bright Smile", '
    '"status_transitions": {"finalized_at": 1772442000, "paid_at": null}}'
)


def test_sqlite_migration_4_copies_invoice_contacts_and_keeps_every_alert_link(tmp_path):
    path = tmp_path / "v1.db"
    store = SqliteStore(path)
    version_1 = sqlite_migrations()[0]
    moment = "2026-03-02T10:00:00.000000Z"
    with store._transaction():
        for statement in _statements(version_1.path.read_text(encoding="utf-8")):
            store._conn.execute(statement)
        store._conn.execute(
            "INSERT INTO billing_schema_version (version, name, applied_at) VALUES (1, 'v1', 'x')"
        )
        params = ((V1_RAW, moment, moment, moment), (moment, moment), (moment,), (moment,) * 3)
        for statement, values in zip(V1_ROWS, params, strict=True):
            store._conn.execute(statement, values)
    assert store.migrate() == [migration.version for migration in sqlite_migrations()[1:]]
    invoice = store.get_invoice("in_1QpL8HLkdIwHu7ixl4OzzPMv")
    assert (invoice.customer_email, invoice.customer_phone, invoice.customer_name) == (
        "ops@brightsmile.example",
        None,
        "Bright Smile",
    )
    assert invoice.finalized_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    # Rebuilding the alerts table neither cleared the step's alert nor dropped the note;
    # the step left mid-send with an attempt counted is taken as confirmed.
    assert store._conn.execute(
        "SELECT alert_id, confirmed_at FROM billing_dunning_events WHERE id = 3"
    ).fetchone() == (7, moment)
    assert [note.body for note in store.alert_notes(7)] == ["called them"]
    assert store._conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    store._conn.execute(
        "INSERT INTO billing_alerts (type, status, dedupe_key, created_at, updated_at) "
        "VALUES ('dunning_undeliverable', 'open', 'dunning_undeliverable:in_1', 'x', 'x')"
    )
    with pytest.raises(sqlite3.IntegrityError):
        store._conn.execute(
            "INSERT INTO billing_alerts (type, status, dedupe_key, created_at, updated_at) "
            "VALUES ('bogus', 'open', 'b', 'x', 'x')"
        )
    # The notes' foreign key points at the rebuilt table: deleting the alert cascades.
    store._conn.execute("DELETE FROM billing_alerts WHERE id = 7")
    assert store.alert_notes(7) == []
    assert store._conn.execute(
        "SELECT alert_id FROM billing_dunning_events WHERE id = 3"
    ).fetchone() == (None,)
    store.close()


@pytest.mark.postgres
def test_postgres_migration_4_copies_invoice_contacts_once_and_takes_the_new_alert_type(
    postgres_url,
):
    migrations = postgres_migrations()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for migration in migrations:
            if migration.version < 4:
                conn.execute(migration.path.read_text(encoding="utf-8").encode())
        moment = datetime(2026, 3, 2, 10, tzinfo=UTC)
        params = ((V1_RAW, moment, moment, moment), (moment, moment), (moment,), (moment,) * 3)
        for statement, values in zip(V1_ROWS, params, strict=True):
            # Ids given explicitly, as the SQLite test does: identity columns need the clause.
            explicit = statement.replace(") VALUES", ") OVERRIDING SYSTEM VALUE VALUES")
            conn.execute(explicit.replace("?", "%s"), values)
        run_sql_files(postgres_url)  # 4 applies; the earlier files run again harmlessly
        conn.execute("UPDATE billing_invoices SET customer_email = 'newer@brightsmile.example'")
        run_sql_files(postgres_url)  # and again: the copy from raw is not repeated
        row = conn.execute(
            "SELECT customer_email, customer_phone, customer_name, finalized_at "
            "FROM billing_invoices"
        ).fetchone()
        assert row == (
            "newer@brightsmile.example",
            None,
            "Bright Smile",
            datetime(2026, 3, 2, 9, tzinfo=UTC),
        )
        assert conn.execute(
            "SELECT alert_id, confirmed_at FROM billing_dunning_events WHERE id = 3"
        ).fetchone() == (7, moment)
        conn.execute(
            "INSERT INTO billing_alerts (type, dedupe_key) VALUES "
            "('dunning_undeliverable', 'dunning_undeliverable:in_1')"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO billing_alerts (type, dedupe_key) VALUES ('bogus', 'b')")


#: Rows mirrored before version 5: an invoice failed twice, and the alert of its event.
V4_ROWS = (
    "INSERT INTO billing_invoices (id, customer_id, status, currency, raw, stripe_created, "
    "stripe_updated_at, synced_at, attempt_count, last_failure_code, last_failure_message) "
    "VALUES ('in_1QpL8HLkdIwHu7ixl4OzzPMv', 'cus_RkS5AtmBK5hCeq', 'open', 'usd', ?, ?, ?, ?, "
    "2, 'insufficient_funds', 'Your card has insufficient funds.')",
    "INSERT INTO billing_stripe_events (id, type, stripe_created, livemode, outcome, source, "
    "processed_at) VALUES ('evt_1QpL8ILkdIwHu7ixPf3bMe1C', 'invoice.payment_failed', ?, "
    "false, 'applied', 'webhook', ?)",
    "INSERT INTO billing_alerts (id, type, status, dedupe_key, invoice_id, stripe_event_id, "
    "attempt_count, created_at, updated_at) VALUES (7, 'invoice_failed', 'open', "
    "'invoice_failed:in_1QpL8HLkdIwHu7ixl4OzzPMv', 'in_1QpL8HLkdIwHu7ixl4OzzPMv', "
    "'evt_1QpL8ILkdIwHu7ixPf3bMe1C', 2, ?, ?)",
)


def _late_failures(store):
    """An older failure delivered after the upgrade, then a newer one."""
    from cloudgreet_billing.domain.dunning import TimelinePlanner
    from cloudgreet_billing.domain.events import plan_event
    from tests.sync.conftest import event, full_invoice

    created = int(datetime(2026, 3, 2, 9, tzinfo=UTC).timestamp())
    for event_id, attempt in (
        ("evt_1QpL8ILkdIwHu7ixOld1Aa0A", 1),
        ("evt_1QpL8ILkdIwHu7ixNew3Cc2C", 3),
    ):
        obj = full_invoice(attempt_count=attempt)
        obj["last_finalization_error"] = {"code": f"attempt_{attempt}", "message": "declined"}
        item = event(event_id, "invoice.payment_failed", obj, created + attempt * 86_400)
        store.apply_event_plans(
            [plan_event(item, "webhook")], planner=TimelinePlanner(), now=datetime.now(UTC)
        )
        yield store.get_invoice("in_1QpL8HLkdIwHu7ixl4OzzPMv").last_failure_code


def test_sqlite_migration_5_gives_rows_mirrored_earlier_their_merge_keys(tmp_path):
    path = tmp_path / "v4.db"
    store = SqliteStore(path)
    moment = "2026-03-03T10:00:00.000000Z"
    with store._transaction():
        for migration in sqlite_migrations()[:4]:
            for statement in _statements(migration.path.read_text(encoding="utf-8")):
                store._conn.execute(statement)
            store._conn.execute(
                "INSERT INTO billing_schema_version (version, name, applied_at) VALUES (?, ?, 'x')",
                (migration.version, migration.name),
            )
        params = ((V1_RAW, moment, moment, moment), (moment, moment), (moment, moment))
        for statement, values in zip(V4_ROWS, params, strict=True):
            store._conn.execute(statement, values)
    assert store.migrate()[0] == 5
    assert store._conn.execute(
        "SELECT merge_attempt, merge_event_id, last_failure_attempt, last_failure_at, "
        "last_failure_event_id, settled_resolution FROM billing_invoices"
    ).fetchone() == (2, "", 2, moment, "", None)
    assert store._conn.execute(
        "SELECT stripe_event_created FROM billing_alerts WHERE id = 7"
    ).fetchone() == (moment,)
    # The keys work: the older attempt loses to what was kept, the newer one wins.
    assert list(_late_failures(store)) == ["insufficient_funds", "attempt_3"]
    store.close()


@pytest.mark.postgres
def test_postgres_migration_5_gives_rows_their_merge_keys_once_and_compares_ids_bytewise(
    postgres_url,
):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for migration in postgres_migrations():
            if migration.version < 5:
                conn.execute(migration.path.read_text(encoding="utf-8").encode())
        moment = datetime(2026, 3, 3, 10, tzinfo=UTC)
        params = ((V1_RAW, moment, moment, moment), (moment, moment), (moment, moment))
        for statement, values in zip(V4_ROWS, params, strict=True):
            explicit = statement.replace(") VALUES", ") OVERRIDING SYSTEM VALUE VALUES")
            conn.execute(explicit.replace("?", "%s"), values)
        run_sql_files(postgres_url)  # 5 applies; the earlier files run again harmlessly
        conn.execute("UPDATE billing_invoices SET merge_attempt = 9")
        run_sql_files(postgres_url)  # and again: the copy is not repeated
        assert conn.execute(
            "SELECT merge_attempt, merge_event_id, last_failure_attempt, last_failure_at, "
            "last_failure_event_id FROM billing_invoices"
        ).fetchone() == (9, "", 2, moment, "")
        assert conn.execute(
            "SELECT stripe_event_created FROM billing_alerts WHERE id = 7"
        ).fetchone() == (moment,)
        collations = conn.execute(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE column_name IN ('merge_event_id', 'last_failure_event_id', "
            "'settled_event_id', 'stripe_event_id') AND table_name LIKE 'billing_%' "
            "AND table_name <> 'billing_quarantined_events'"
        ).fetchall()
        assert len(collations) == 6 and {row[2] for row in collations} == {"C"}
    from cloudgreet_billing.adapters.store.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    try:
        assert list(_late_failures(store)) == ["insufficient_funds", "attempt_3"]
    finally:
        store.close()
