"""Where the store is, and a store that cannot be written: said in one line, with the fix.

Read-only files and folders, a held lock and a file that is not a database are SQLite's
conditions (PostgreSQL has no file, and waits on a lock by its own lock_timeout); a store
that refuses writes is tested on PostgreSQL too, as a read-only database.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from cloudgreet_billing.adapters.store import sqlite as sqlite_adapter
from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
from tests.cli.helpers import data, error, run
from tests.read_only import read_only

CUSTOMER = "cus_QpL8HLkdIwHu7ixl4O"
ADD = (
    "ledger",
    "add",
    "--customer",
    CUSTOMER,
    "--kind",
    "booking_fee",
    "--amount",
    "4.20",
    "--invoice",
    "in_1QpL8HLkdIwHu7ixl4OzzPMv",
)


def checks(result) -> dict[str, dict]:
    return {check["name"]: check for check in json.loads(result.stdout)["data"]["checks"]}


# --- where the store is --------------------------------------------------------------


def test_a_relative_url_is_shown_as_the_absolute_file(isolated_env, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "sqlite:///billing.db")
    result = run(*ADD)
    assert result.exit_code == 0, result.stderr
    assert f"store: sqlite {isolated_env / 'billing.db'}" in result.stderr.splitlines()
    assert data(run("db", "status", "--json"))["location"] == str(isolated_env / "billing.db")


def test_a_command_that_creates_a_new_store_says_so(isolated_env, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "sqlite:///billing.db")
    warning = f"warning: created a new, empty store at {isolated_env / 'billing.db'}"

    first = run("ledger", "list", "--json")

    assert first.exit_code == 0
    assert json.loads(first.stdout) == {"data": []}  # stdout stays JSON
    assert any(line.startswith(warning) for line in first.stderr.splitlines())
    assert "BILLING_DATABASE_URL" in first.stderr
    again = run("ledger", "list")
    assert "created a new" not in again.stderr


def test_db_migrate_creates_a_store_without_a_warning(isolated_env, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "sqlite:///billing.db")
    result = run("db", "migrate")
    assert result.exit_code == 0
    assert "created a new" not in result.stderr
    assert (isolated_env / "billing.db").is_file()


def test_the_folder_of_a_store_url_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path}/typo/billing.db")
    result = run(*ADD)
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: the folder {tmp_path / 'typo'} of the SQLite store billing.db does not exist "
            f"(create it with mkdir -p {tmp_path / 'typo'}, or fix BILLING_DATABASE_URL"
        )
    )
    assert not (tmp_path / "typo").exists()


def test_the_default_location_is_made_on_first_use(tmp_path):
    result = run("ledger", "list")
    assert result.exit_code == 0
    default = tmp_path / "data-home" / "cloudgreet-billing" / "billing.db"
    assert default.is_file()
    assert f"created a new, empty store at {default}" in result.stderr


# --- a store that cannot be written ----------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    database = folder / "billing.db"
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{database}")
    assert run(*ADD).exit_code == 0
    return database


def test_a_read_only_store_file_is_one_line_with_the_fix(sqlite_store):
    with read_only(sqlite_store):
        result = run(*ADD)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the SQLite store {sqlite_store} is read-only: this user cannot write the file "
        f"(make it writable with chmod u+w {sqlite_store} or run as its owner; or point "
        "BILLING_DATABASE_URL at a writable copy)"
    )
    assert len(data(run("ledger", "list", "--json"))) == 1


def test_a_read_only_store_folder_is_one_line_with_the_fix(sqlite_store):
    folder = sqlite_store.parent
    with read_only(folder):
        result = run(*ADD, "--json")
    assert result.exit_code == 1
    shown = error(result)
    assert shown["code"] == "store_read_only"
    assert shown["message"] == (
        f"the SQLite store {sqlite_store} cannot be written: this user cannot write its "
        f"folder {folder}, where SQLite keeps the store's -wal and -shm files"
    )
    assert f"chmod u+w {folder}" in shown["hint"]


def test_a_lock_held_past_the_busy_timeout_is_exit_75(sqlite_store, monkeypatch):
    monkeypatch.setattr(sqlite_adapter, "BUSY_TIMEOUT_MS", 50)
    holder = sqlite3.connect(sqlite_store, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = run(*ADD)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 75
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: another process holds the store {sqlite_store}; retry")
    )
    assert len(data(run("ledger", "list", "--json"))) == 1


@pytest.mark.parametrize(
    "command",
    [
        ("ledger", "list"),
        ADD,
        ("alerts", "list"),
        ("dunning", "run"),
        ("db", "status"),
        ("db", "migrate"),
        ("export-csv",),
        ("dashboard",),
    ],
)
def test_a_file_that_is_not_a_database_says_so_and_how_to_recover(tmp_path, monkeypatch, command):
    junk = tmp_path / "billing.db"
    junk.write_bytes(os.urandom(8192))
    before = junk.read_bytes()
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{junk}")

    result = run(*command)

    assert result.exit_code == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {junk} is not a SQLite database (restore it from a backup")
    assert f"mv {junk} {junk}.broken" in last
    assert "writable" not in last
    assert junk.read_bytes() == before


# --- doctor ------------------------------------------------------------------------------


def test_doctor_on_a_new_store_says_it_is_new_and_creates_nothing(isolated_env, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "sqlite:///billing.db")
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.stdout
    store = checks(result)["store"]
    assert store["status"] == "ok"
    assert store["detail"] == (
        f"sqlite {isolated_env / 'billing.db'}: a new store, not created yet; the first "
        f"command creates it with schema version {LATEST_SCHEMA_VERSION}"
    )
    assert {checks(result)[name]["status"] for name in ("dunning", "quarantine")} == {"ok"}
    assert not (isolated_env / "billing.db").exists()


def test_doctor_on_an_empty_sqlite_file_agrees_with_the_other_commands(isolated_env, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "sqlite:///billing.db")
    assert run("db", "status").exit_code == 0  # makes the file, installs nothing
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.stdout
    assert (
        "a new, empty store, writable; the first command installs"
        in (checks(result)["store"]["detail"])
    )


def test_doctor_checks_the_store_can_be_written(sqlite_store):
    assert checks(run("doctor", "--json"))["store"]["detail"].endswith(
        f"schema version {LATEST_SCHEMA_VERSION}, writable"
    )
    with read_only(sqlite_store):
        result = run("doctor", "--json")
    assert result.exit_code == 1
    store = checks(result)["store"]
    assert store["status"] == "fail"
    assert f"the SQLite store {sqlite_store} is read-only" in store["detail"]


def test_doctor_says_when_another_process_holds_the_store(sqlite_store, monkeypatch):
    monkeypatch.setattr(sqlite_adapter, "WRITE_PROBE_TIMEOUT_MS", 50)
    holder = sqlite3.connect(sqlite_store, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = run("doctor", "--json")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store = checks(result)["store"]
    assert store["status"] == "warn"
    assert f"another process holds the store {sqlite_store}; retry" in store["detail"]


def test_doctor_on_a_new_store_in_a_closed_folder_fails(tmp_path, monkeypatch):
    closed = tmp_path / "closed"
    closed.mkdir()
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{closed}/billing.db")
    with read_only(closed):
        result = run("doctor", "--json")
    assert result.exit_code == 1
    assert "cannot write its folder" in checks(result)["store"]["detail"]


def test_doctor_fails_a_read_only_postgres_store(postgres_url, monkeypatch):
    import psycopg

    monkeypatch.setenv("BILLING_DATABASE_URL", postgres_url)
    assert run("db", "migrate").exit_code == 0
    assert checks(run("doctor", "--json"))["store"]["status"] == "ok"
    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

    result = run("doctor", "--json")

    assert result.exit_code == 1
    store = checks(result)["store"]
    assert store["status"] == "fail"
    assert "is read-only" in store["detail"] and "replica" in store["detail"]
    added = run(*ADD, "--json")
    assert added.exit_code == 1
    assert error(added)["code"] == "store_read_only"
