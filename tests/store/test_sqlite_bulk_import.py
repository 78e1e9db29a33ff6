"""SQLite's bulk-load path for large ledger imports keeps every guarantee of the slow path."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from cloudgreet_billing.adapters.store.migrations import sqlite_migrations
from cloudgreet_billing.adapters.store.sqlite import (
    BULK_LOAD_MIN_ROWS,
    EXTERNAL_KEY,
    SqliteStore,
    _statements,
)
from cloudgreet_billing.domain.ledger import make_draft
from cloudgreet_billing.domain.ledger_batch import batches_of
from cloudgreet_billing.domain.ledger_identity import ExternalIdConflicts
from cloudgreet_billing.errors import BadInput

NOW = datetime(2026, 11, 24, tzinfo=UTC)
ROWS = BULK_LOAD_MIN_ROWS + 10


def drafts(count: int, prefix: str = "e"):
    for i in range(count):
        yield make_draft(
            customer_id=f"cus_{i % 97}",
            kind="booking_fee",
            amount=f"{i % 500}.25",
            currency="usd",
            occurred_at=f"2026-11-{1 + i % 28:02d}",
            external_id=f"{prefix}{i}",
        )


def ledger_indexes(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'billing_usage_ledger' AND sql IS NOT NULL"
            )
        }


@pytest.fixture
def sqlite_store(tmp_path):
    store = SqliteStore(tmp_path / "bulk.db")
    store.migrate()
    yield store
    store.close()


def test_bulk_import_rebuilds_the_indexes_and_stays_idempotent(sqlite_store):
    before = ledger_indexes(sqlite_store.path)
    assert len(before) == 4 and EXTERNAL_KEY in before
    outcome = sqlite_store.import_ledger(batches_of(drafts(ROWS)), NOW, expected_rows=ROWS)
    assert (outcome.inserted, outcome.duplicates) == (ROWS, 0)
    assert ledger_indexes(sqlite_store.path) == before
    again = sqlite_store.import_ledger(batches_of(drafts(ROWS)), NOW, expected_rows=ROWS)
    assert (again.inserted, again.duplicates) == (0, ROWS)
    with sqlite3.connect(sqlite_store.path) as conn:
        total = conn.execute(
            "SELECT count(*), sum(amount) FROM billing_usage_ledger "
            "WHERE occurred_at >= '2026-11-02' AND occurred_at < '2026-11-03'"
        ).fetchone()
    expected = [i for i in range(ROWS) if i % 28 == 1]
    assert total == (len(expected), sum((i % 500) * 100 + 25 for i in expected))


def test_bulk_import_failure_restores_indexes_and_writes_nothing(sqlite_store):
    before = ledger_indexes(sqlite_store.path)

    def broken():
        yield from drafts(ROWS - 5)
        raise BadInput("line 60000: broken")

    with pytest.raises(BadInput):
        sqlite_store.import_ledger(batches_of(broken()), NOW, expected_rows=ROWS)
    assert ledger_indexes(sqlite_store.path) == before
    assert sqlite_store.row_counts()["billing_usage_ledger"] == 0


def test_only_large_loads_relative_to_the_table_take_the_bulk_path(sqlite_store):
    decision = sqlite_store._is_bulk_load
    assert decision(ROWS)
    assert not decision(None), "stdin imports have no estimate"
    assert not decision(BULK_LOAD_MIN_ROWS - 1)
    # The table's size is read from its highest id; make it look like 4 million rows.
    sqlite_store._conn.execute(
        "INSERT INTO billing_usage_ledger (id, customer_id, kind, amount, currency, "
        "occurred_at, created_at) VALUES (4000000, 'cus_1', 'booking_fee', 1, 'usd', ?, ?)",
        (NOW, NOW),
    )
    assert not decision(BULK_LOAD_MIN_ROWS), "a table over 4x the load keeps its indexes"
    assert decision(1_000_000)


def bad_row_is_refused(store) -> bool:
    """Whether the ledger's CHECK constraints refuse a negative booking fee right now."""
    try:
        store._conn.execute(
            "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, "
            "occurred_at, created_at) VALUES ('cus_1', 'booking_fee', -1, 'usd', ?, ?)",
            (NOW, NOW),
        )
    except sqlite3.IntegrityError:
        return True
    return False


def connection_settings(store) -> tuple[int, int]:
    return (
        store._conn.execute("PRAGMA cache_size").fetchone()[0],
        store._conn.execute("PRAGMA threads").fetchone()[0],
    )


def test_a_bulk_load_leaves_the_connection_as_it_found_it(sqlite_store):
    before = connection_settings(sqlite_store)
    sqlite_store.import_ledger(batches_of(drafts(ROWS)), NOW, expected_rows=ROWS)
    assert connection_settings(sqlite_store) == before
    assert bad_row_is_refused(sqlite_store), "CHECK constraints are enforced again"


def test_a_failed_bulk_load_leaves_the_connection_as_it_found_it(sqlite_store):
    before = connection_settings(sqlite_store)

    def broken():
        yield from drafts(1_000)
        raise BadInput("line 1001: broken")

    with pytest.raises(BadInput):
        sqlite_store.import_ledger(batches_of(broken()), NOW, expected_rows=ROWS)
    assert connection_settings(sqlite_store) == before
    assert bad_row_is_refused(sqlite_store), "CHECK constraints are enforced again"
    assert sqlite_store.row_counts()["billing_usage_ledger"] == 0


def test_a_bulk_load_keeps_the_first_of_repeated_external_ids(sqlite_store):
    """Without the key during the load, repeats are found after it: the first row of an
    id wins, whether recorded before or earlier in the same file, as ON CONFLICT gives."""
    sqlite_store.import_ledger(batches_of(drafts(3, prefix="old")), NOW)

    def with_repeats():
        for n, draft in enumerate(drafts(ROWS)):
            yield draft._replace(description=f"row {n}")
        # Again: an id already in the ledger, and ids earlier in this load.
        yield from (d._replace(description="repeat") for d in drafts(2, prefix="old"))
        yield from (d._replace(description="repeat") for d in drafts(5))

    outcome = sqlite_store.import_ledger(batches_of(with_repeats()), NOW, expected_rows=ROWS)
    assert (outcome.inserted, outcome.duplicates) == (ROWS, 7)
    with sqlite3.connect(sqlite_store.path) as conn:
        kept = dict(
            conn.execute(
                "SELECT external_id, description FROM billing_usage_ledger "
                "WHERE external_id IN ('old0', 'e0', 'e4')"
            ).fetchall()
        )
        assert kept == {"old0": None, "e0": "row 0", "e4": "row 4"}
        (count,) = conn.execute("SELECT count(*) FROM billing_usage_ledger").fetchone()
        assert count == ROWS + 3
    assert ledger_indexes(sqlite_store.path) >= {EXTERNAL_KEY}
    assert "import_scratch" not in " ".join(ledger_indexes(sqlite_store.path))
    with pytest.raises(sqlite3.IntegrityError):
        sqlite_store._conn.execute(
            "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, "
            "occurred_at, created_at, external_id) VALUES ('cus_1', 'booking_fee', 1, 'usd', "
            "?, ?, 'e1')",
            (NOW, NOW),
        )


def test_a_bulk_load_before_migration_2_keeps_the_column_key(tmp_path):
    """A store still on version 1 has external_id UNIQUE on the column, which cannot be
    dropped: the load goes in through it, and is still idempotent."""
    store = SqliteStore(tmp_path / "v1.db")
    version_1 = sqlite_migrations()[0]
    for statement in _statements(version_1.path.read_text(encoding="utf-8")):
        store._conn.execute(statement)
    try:
        first = store.import_ledger(batches_of(drafts(ROWS)), NOW, expected_rows=ROWS)
        again = store.import_ledger(batches_of(drafts(ROWS)), NOW, expected_rows=ROWS)
    finally:
        store.close()
    assert (first.inserted, again.inserted, again.duplicates) == (ROWS, 0, ROWS)


def test_a_bulk_load_refuses_reused_external_ids_and_restores_everything(sqlite_store):
    """Without the key during the load, a reuse of an id with other facts is found when
    the key is built: the load rolls back whole, indexes and all."""
    recorded = list(drafts(3, prefix="old"))
    sqlite_store.import_ledger(batches_of(recorded), NOW)
    before = ledger_indexes(sqlite_store.path)
    loaded = list(drafts(ROWS))

    def with_conflicts():
        yield from loaded
        yield loaded[7]._replace(description="the same entry again")
        yield recorded[1]._replace(amount=recorded[1].amount + 1)
        yield loaded[7]._replace(customer_id="cus_QTestBeta002")

    assert sqlite_store._is_bulk_load(ROWS)
    with pytest.raises(ExternalIdConflicts) as raised:
        sqlite_store.import_ledger(batches_of(with_conflicts()), NOW, expected_rows=ROWS)
    found = [(c.given_row, c.recorded_row, c.recorded_entry_id) for c in raised.value.conflicts]
    assert found == [(ROWS + 2, None, 2), (ROWS + 3, 8, None)]
    assert ledger_indexes(sqlite_store.path) == before
    assert sqlite_store.row_counts()["billing_usage_ledger"] == 3
    assert bad_row_is_refused(sqlite_store), "CHECK constraints are enforced again"
