"""Usage-ledger use cases: record one entry, import a CSV all-or-nothing, list entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry
from cloudgreet_billing.domain.ledger_identity import (
    CONFLICT_HINT,
    ExternalIdConflicts,
    as_json,
    describe,
)
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services import Progress

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome, LedgerQuery
    from cloudgreet_billing.services.ledger_csv import LedgerCsv

#: A typical ledger row with an external id and a short description.
BYTES_PER_ROW_ESTIMATE = 80


@dataclass
class ImportReport:
    """The result of ``import_csv``."""

    source: str
    rows: int
    inserted: int = 0
    duplicates: int = 0
    dry_run: bool = False
    #: A dry run's rows a real import would insert (``inserted`` stays 0).
    would_insert: int = 0
    errors: list[str] = field(default_factory=list)


def record_entry(store: Store, draft: LedgerDraft, *, now: datetime) -> tuple[LedgerEntry, bool]:
    """Record one entry; repeating an entry under its ``external_id`` returns the one
    already recorded, and reusing the id with other facts raises ``ExternalIdConflicts``
    (exit 2), recording nothing."""
    return store.record_ledger_entry(draft, now)


def list_entries(store: Store, query: LedgerQuery) -> list[LedgerEntry]:
    return store.list_ledger(query)


def count_entries(store: Store, query: LedgerQuery) -> int:
    """How many entries match ``query``, whatever its limit."""
    return store.count_ledger(query)


def import_csv(
    store: Store,
    stream: TextIO,
    *,
    source: str,
    now: datetime,
    actor: str,
    dry_run: bool = False,
    size_bytes: int | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import ledger rows from CSV, all-or-nothing, idempotent through ``external_id``.

    A row that reuses an ``external_id`` with other facts, recorded before or on an
    earlier line, fails the whole import (a dry run too), naming its line and both
    versions. ``size_bytes`` (the file's size, when known) gives the store a row estimate.
    """
    # Here, not at the top: `ledger list` and `ledger add` need none of the CSV reading.
    from cloudgreet_billing.services.ledger_csv import LedgerCsv

    rows = LedgerCsv(stream, source, progress)
    expected = None if size_bytes is None else size_bytes // BYTES_PER_ROW_ESTIMATE
    try:
        outcome: ImportOutcome = store.import_ledger(
            rows, now, expected_rows=expected, dry_run=dry_run
        )
    except ExternalIdConflicts as conflicts:
        raise _by_line(conflicts, rows, dry_run=dry_run) from None
    if dry_run:
        return ImportReport(
            source=source,
            rows=rows.rows,
            duplicates=outcome.duplicates,
            dry_run=True,
            would_insert=outcome.inserted,
        )
    report = ImportReport(
        source=source, rows=rows.rows, inserted=outcome.inserted, duplicates=outcome.duplicates
    )
    store.append_audit(
        AuditDraft(
            actor=actor,
            action="ledger.import",
            target=source,
            outcome="imported",
            details={
                "rows": report.rows,
                "inserted": report.inserted,
                "duplicates": report.duplicates,
            },
        ),
        now,
    )
    return report


def _by_line(conflicts: ExternalIdConflicts, rows: LedgerCsv, *, dry_run: bool) -> BadInput:
    """The store's conflicts, its rows named by their lines in the file: one line for one
    conflict, else a count and the list. ``--json`` also gets them as data (``conflicts``)."""
    line_of = {}
    for conflict in conflicts.conflicts:
        for row in (conflict.given_row, conflict.recorded_row):
            if row is not None:
                line_of[row] = rows.line_of(row)
    listed = [describe(conflict, line_of=line_of) for conflict in conflicts.conflicts]
    found = [as_json(conflict, line_of=line_of) for conflict in conflicts.conflicts]
    outcome = "nothing would be imported" if dry_run else "nothing was imported"
    if conflicts.count == 1:
        return BadInput(
            f"{rows.source} {listed[0]}; {outcome}",
            CONFLICT_HINT,
            code="external_id_conflict",
            conflicts=found,
            conflict_count=1,
        )
    more = conflicts.count - len(listed)
    return BadInput(
        f"{rows.source}: {conflicts.count} rows reuse an external_id with other values; {outcome}",
        CONFLICT_HINT,
        code="external_id_conflict",
        errors=listed + ([f"… and {more} more"] if more > 0 else []),
        conflicts=found,
        conflict_count=conflicts.count,
    )
