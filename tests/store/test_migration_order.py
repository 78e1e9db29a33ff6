"""Migrations run in version order wherever they are applied: ``db migrate``, one pasted
script, or the Supabase CLI's ``supabase/migrations`` folder."""

from __future__ import annotations

import io
import itertools
import re

import psycopg
import pytest

from cloudgreet_billing.adapters.store import migrations
from cloudgreet_billing.adapters.store.migrations import (
    LATEST_SCHEMA_VERSION,
    postgres_migrations,
    supabase_cli_name,
    write_sql_for_pasting,
    write_supabase_cli_migrations,
)

#: The Supabase CLI's migration file rule (supabase/cli, ``MigrateFilePattern``); files
#: that do not match are skipped with "file name must match pattern <timestamp>_name.sql".
SUPABASE_CLI_PATTERN = re.compile(r"^([0-9]+)_(.*)\.sql$")


def test_name_order_is_the_wrong_order():
    by_name = sorted(m.path.name for m in postgres_migrations())
    assert by_name[0] == "0002_ledger_external_key.sql"  # what a glob or `ls` runs first
    assert not SUPABASE_CLI_PATTERN.fullmatch("CREATE_BILLING_INFRASTRUCTURE.sql")


def test_the_order_is_the_version():
    found = postgres_migrations()
    assert found[0].path.name == "CREATE_BILLING_INFRASTRUCTURE.sql"
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[-1].version == LATEST_SCHEMA_VERSION


def test_every_file_says_what_it_needs_first():
    found = postgres_migrations()
    assert "-- Needs first: nothing." in found[0].path.read_text()
    for previous, migration in itertools.pairwise(found):
        header = migration.path.read_text().split("\n\n", 1)[0]
        assert f"-- Needs first: {previous.path.name} (version {previous.version})" in header, (
            migration.path.name
        )


def test_two_files_for_one_version_are_refused(tmp_path, monkeypatch):
    for name in ("CREATE_BILLING_INFRASTRUCTURE.sql", "0002_a.sql", "0002_b.sql"):
        (tmp_path / name).write_text("SELECT 1;\n")
    monkeypatch.setattr(migrations, "migrations_dir", lambda: tmp_path)
    with pytest.raises(RuntimeError, match="two migration files claim schema version 2"):
        postgres_migrations()


def test_the_supabase_cli_files_sort_in_version_order(tmp_path):
    written = write_supabase_cli_migrations(tmp_path / "supabase" / "migrations")
    names = [path.name for path in written]
    assert names == sorted(names)  # the CLI applies them by name
    assert names[0] == "20260101000001_cloudgreet_billing_create_billing_infrastructure.sql"
    for path, migration in zip(written, postgres_migrations(), strict=True):
        assert SUPABASE_CLI_PATTERN.fullmatch(path.name)
        assert path.read_text() == migration.path.read_text()
        assert supabase_cli_name(migration) == path.name
    # Stable names: a second export names the same versions the same way.
    again = write_supabase_cli_migrations(tmp_path / "again")
    assert [p.name for p in again] == names


def test_the_pasted_script_lists_every_file_in_order():
    out = io.StringIO()
    write_sql_for_pasting(out)
    script = out.getvalue()
    banner = re.compile(r"^-- ==== (\d+)/(\d+): (\S+) \(schema version (\d+)\) ====$", re.M)
    banners = banner.findall(script)
    assert [(b[2], int(b[3])) for b in banners] == [
        (m.path.name, m.version) for m in postgres_migrations()
    ]


@pytest.mark.postgres
def test_the_pasted_script_builds_the_schema_on_a_supabase_database_twice(supabase_db):
    out = io.StringIO()
    write_sql_for_pasting(out)
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        for _ in range(2):  # safe to run again, e.g. after a partial failure
            conn.execute(out.getvalue())
        versions = [v for (v,) in conn.execute("SELECT version FROM billing_schema_version")]
        assert versions == [m.version for m in postgres_migrations()]
        anon_can_read = conn.execute(
            "SELECT has_table_privilege('anon', 'billing_usage_ledger', 'SELECT')"
        ).fetchone()
        assert anon_can_read == (False,)  # the default privileges were revoked again
