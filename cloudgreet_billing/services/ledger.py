"""Usage-ledger use cases: record one entry, import a CSV all-or-nothing, list entries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, TextIO

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry
from cloudgreet_billing.services import Progress

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome, LedgerQuery

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
    errors: list[str] = field(default_factory=list)


def record_entry(store: Store, draft: LedgerDraft, *, now: datetime) -> tuple[LedgerEntry, bool]:
    """Record one entry; a repeated ``external_id`` returns the entry already recorded."""
    return store.record_ledger_entry(draft, now)


def list_entries(store: Store, query: LedgerQuery) -> list[LedgerEntry]:
    return store.list_ledger(query)


def import_csv(
    open_store: Callable[[], Store],
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

    ``size_bytes`` (the file's size, when known) gives the store a row estimate. The store
    is opened (``open_store``) once the first rows are read: a file that is no ledger (no
    rows, another separator, bad from its first rows) is refused before any store is.
    """
    # Here, not at the top: `ledger list` and `ledger add` need none of the CSV reading.
    from cloudgreet_billing.services.ledger_csv import LedgerCsv

    rows = LedgerCsv(stream, source, progress, now=now)
    batches = iter(rows)
    first = next(batches, None)
    store = open_store()
    if dry_run:
        for _ in batches:
            pass
        return ImportReport(source=source, rows=rows.rows, dry_run=True)
    expected = None if size_bytes is None else size_bytes // BYTES_PER_ROW_ESTIMATE
    every = batches if first is None else chain((first,), batches)
    outcome: ImportOutcome = store.import_ledger(every, now, expected_rows=expected)
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
