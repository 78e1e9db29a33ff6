"""An external_id names one entry: a repeat is skipped, a reuse with other facts refused.

On SQLite and PostgreSQL, for ``ledger add`` and imports (against the ledger and within
the import), dry runs included; nothing is written when any row conflicts.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudgreet_billing.adapters.store.protocol_ledger import LedgerQuery
from cloudgreet_billing.domain.ledger import make_draft
from cloudgreet_billing.domain.ledger_batch import batches_of
from cloudgreet_billing.domain.ledger_identity import (
    MAX_LISTED_CONFLICTS,
    EntryFacts,
    ExternalIdConflicts,
)

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
BASE = {
    "customer_id": "cus_QTestAcme01",
    "kind": "booking_fee",
    "amount": "2.50",
    "currency": "usd",
    "occurred_at": "2026-11-20T10:00:00Z",
    "invoice_id": "in_1QpL8HLkdIwHu7ixl4OzzPMv",
}
#: One change to each fact an external_id vouches for.
OTHER_FACTS = {
    "customer": {"customer_id": "cus_QTestBeta002"},
    "kind": {"kind": "subscription"},
    "amount": {"amount": "2.51"},
    "currency": {"currency": "eur"},
    "time": {"occurred_at": "2026-11-20T10:00:00.000001Z"},
    "invoice": {"invoice_id": "in_1QpL8HLkdIwHu7ixl4OzzPMw"},
    "no invoice": {"invoice_id": None},
}


def draft(external_id: str | None = "ext-1", **overrides: object):
    return make_draft(**{**BASE, "external_id": external_id, **overrides})  # type: ignore[arg-type]


def ledger_count(store) -> int:
    return store.row_counts()["billing_usage_ledger"]


def test_adding_the_same_entry_again_returns_the_recorded_one(store):
    first, created = store.record_ledger_entry(draft(description="3 bookings"), NOW)
    # The description is free text about the entry, not what it records.
    again, created_again = store.record_ledger_entry(draft(description="three bookings"), NOW)
    assert (created, created_again) == (True, False)
    assert again == first
    assert ledger_count(store) == 1


@pytest.mark.parametrize("change", OTHER_FACTS.values(), ids=OTHER_FACTS.keys())
def test_adding_other_facts_under_a_recorded_external_id_is_refused(store, change):
    first, _ = store.record_ledger_entry(draft(), NOW)
    with pytest.raises(ExternalIdConflicts) as raised:
        store.record_ledger_entry(draft(**change), NOW)
    (conflict,) = raised.value.conflicts
    assert (conflict.external_id, conflict.recorded_entry_id, conflict.given_row) == (
        "ext-1",
        first.id,
        None,
    )
    assert conflict.recorded == EntryFacts.of(first)
    assert conflict.given == EntryFacts.of(draft(**change))
    assert raised.value.exit_code == 2
    assert ledger_count(store) == 1


def test_the_refusal_names_both_versions(store):
    first, _ = store.record_ledger_entry(draft(), NOW)
    with pytest.raises(ExternalIdConflicts) as raised:
        store.record_ledger_entry(draft(amount="9", invoice_id=None), NOW)
    assert raised.value.message == (
        f"external_id ext-1 already names entry {first.id}, with other values: "
        f"amount 2.50 usd (entry {first.id}) vs 9.00 usd (given); "
        f"invoice in_1QpL8HLkdIwHu7ixl4OzzPMv (entry {first.id}) vs none (given)"
    )
    assert raised.value.code == "external_id_conflict"


@pytest.mark.parametrize("change", OTHER_FACTS.values(), ids=OTHER_FACTS.keys())
def test_an_import_reusing_a_recorded_external_id_writes_nothing(store, change):
    first, _ = store.record_ledger_entry(draft(), NOW)
    rows = [draft("new-1"), draft(), draft("new-2"), draft(**change), draft("new-3")]
    with pytest.raises(ExternalIdConflicts) as raised:
        store.import_ledger(batches_of(rows, size=2), NOW)
    (conflict,) = raised.value.conflicts
    assert (conflict.given_row, conflict.recorded_entry_id, conflict.recorded_row) == (
        4,
        first.id,
        None,
    )
    assert conflict.given == EntryFacts.of(draft(**change))
    assert ledger_count(store) == 1


@pytest.mark.parametrize("change", OTHER_FACTS.values(), ids=OTHER_FACTS.keys())
def test_an_import_reusing_its_own_external_id_writes_nothing(store, change):
    rows = [draft("a"), draft(), draft("b"), draft(), draft(**change)]
    with pytest.raises(ExternalIdConflicts) as raised:
        store.import_ledger(batches_of(rows, size=2), NOW)
    (conflict,) = raised.value.conflicts
    assert (conflict.given_row, conflict.recorded_row, conflict.recorded_entry_id) == (5, 2, None)
    assert conflict.recorded == EntryFacts.of(draft())
    assert ledger_count(store) == 0


def test_identical_repeats_are_skipped_and_counted(store):
    store.record_ledger_entry(draft("old"), NOW)
    rows = [draft("old"), draft("a"), draft("a", description="again"), draft(None), draft(None)]
    outcome = store.import_ledger(batches_of(rows, size=2), NOW)
    assert (outcome.inserted, outcome.duplicates) == (3, 2)
    assert ledger_count(store) == 4


def test_conflicts_are_found_far_into_a_large_import(store):
    """Rows go straight in until one repeats an id; the rest are staged. Reuses of ids
    from both parts, and of recorded ids, are all found, each naming its earlier row."""
    store.record_ledger_entry(draft("old"), NOW)
    rows = [draft(f"e{i}", amount=f"{i}.00") for i in range(1, 3_001)]
    rows[1_499] = draft("e10", amount="10.00")  # row 1500: an identical repeat of row 10
    rows[1_999] = draft("e20", amount="99.00")  # row 2000: row 20 had 20.00
    rows[2_499] = draft("e1600", amount="1.00")  # row 2500: row 1600 had 1600.00
    rows[2_999] = draft("old", amount="7.00")  # row 3000: the recorded entry had 2.50
    with pytest.raises(ExternalIdConflicts) as raised:
        store.import_ledger(batches_of(rows, size=500), NOW)
    found = [(c.given_row, c.recorded_row, c.external_id) for c in raised.value.conflicts]
    assert found == [(2000, 20, "e20"), (2500, 1600, "e1600"), (3000, None, "old")]
    assert raised.value.count == 3
    assert ledger_count(store) == 1


def test_many_conflicts_list_the_first_and_count_them_all(store):
    rows = [draft(f"e{i}") for i in range(30)] + [draft(f"e{i}", amount="3.00") for i in range(30)]
    with pytest.raises(ExternalIdConflicts) as raised:
        store.import_ledger(batches_of(rows), NOW)
    assert raised.value.count == 30
    assert len(raised.value.conflicts) == MAX_LISTED_CONFLICTS
    assert [c.given_row for c in raised.value.conflicts] == list(range(31, 51))
    assert ledger_count(store) == 0


def test_a_dry_run_says_what_an_import_would_do_and_writes_nothing(store):
    store.record_ledger_entry(draft("old"), NOW)
    rows = [draft("old"), draft("a"), draft("a"), draft(None)]
    outcome = store.import_ledger(batches_of(rows), NOW, dry_run=True)
    assert (outcome.inserted, outcome.duplicates) == (2, 2)
    assert ledger_count(store) == 1
    # The store is left usable, and a real import does what the dry run said.
    real = store.import_ledger(batches_of(rows), NOW)
    assert (real.inserted, real.duplicates) == (2, 2)


def test_a_dry_run_finds_conflicts_too(store):
    store.record_ledger_entry(draft("old"), NOW)
    rows = [draft("a"), draft("old", kind="subscription")]
    with pytest.raises(ExternalIdConflicts) as raised:
        store.import_ledger(batches_of(rows), NOW, dry_run=True)
    assert [c.given_row for c in raised.value.conflicts] == [2]
    assert ledger_count(store) == 1


def test_rows_after_a_repeat_still_go_in_once_each_and_in_file_order(store):
    rows = [draft(f"e{i:04d}") for i in range(1_000)]
    rows.insert(600, draft("e0005", description="the booking system sent it twice"))
    outcome = store.import_ledger(batches_of(rows, size=250), NOW)
    assert (outcome.inserted, outcome.duplicates) == (1_000, 1)
    entries = store.list_ledger(LedgerQuery(limit=5_000))
    # Newest first: equal times, so by id, which follows the file.
    assert [entry.external_id for entry in reversed(entries)] == [f"e{i:04d}" for i in range(1_000)]


@pytest.mark.postgres
def test_a_rival_import_that_wins_the_race_is_named_as_the_recorded_entry(postgres_url):
    """PostgreSQL: another session records the external_id while this import waits on it,
    with the same clock. The conflict names that entry, not a row of this import."""
    import threading

    import psycopg

    from cloudgreet_billing.adapters.store.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    store.migrate()
    raised: list[ExternalIdConflicts] = []
    with psycopg.connect(postgres_url) as rival:
        rival.execute(
            "INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, "
            "occurred_at, invoice_id, external_id, created_at) "
            "VALUES (%s, 'booking_fee', 250, 'usd', %s, %s, 'ext-1', %s)",
            (BASE["customer_id"], datetime(2026, 11, 20, 10, tzinfo=UTC), BASE["invoice_id"], NOW),
        )

        def run_import() -> None:
            try:
                store.import_ledger(batches_of([draft(amount="9.99"), draft("other")]), NOW)
            except ExternalIdConflicts as conflicts:
                raised.append(conflicts)

        waiting = threading.Thread(target=run_import)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # ON CONFLICT waits for the rival's entry
        rival.commit()
        waiting.join(10)
    (conflicts,) = raised
    (conflict,) = conflicts.conflicts
    recorded_id = store.list_ledger(LedgerQuery())[0].id
    assert (conflict.given_row, conflict.recorded_row, conflict.recorded_entry_id) == (
        1,
        None,
        recorded_id,
    )
    assert ledger_count(store) == 1
    store.close()
