"""Usage-ledger use cases: record one entry, import a CSV all-or-nothing, list entries."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, TextIO

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.domain.ledger import DraftParser, LedgerDraft, LedgerEntry
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services import Progress

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome, LedgerQuery

REQUIRED_COLUMNS = ("customer_id", "kind", "amount", "currency", "occurred_at")
OPTIONAL_COLUMNS = ("invoice_id", "description", "external_id")
ALL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
#: Bad rows listed one by one; past this only their count is kept, to bound memory.
MAX_LISTED_ERRORS = 10_000
#: A typical ledger row with an external id and a short description.
BYTES_PER_ROW_ESTIMATE = 80
PROGRESS_EVERY = 10_000


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


class _CsvRows:
    """Validated drafts from a CSV stream, with every bad row remembered by line number.

    Iterating yields drafts while the file is clean. After the first bad row it yields
    nothing more but reads on, so that every bad row is reported, and at the end it raises
    ``BadInput``: the store's transaction then rolls back and nothing is written.
    """

    def __init__(self, stream: TextIO, source: str, progress: Progress | None = None) -> None:
        self.source = source
        self._progress = progress
        self.rows = 0
        self.errors: list[str] = []
        self.bad_rows = 0
        self._reader = csv.reader(stream)
        self._stream = stream

    def _bad(self, line: int, message: str) -> None:
        self.bad_rows += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(f"line {line}: {message}")

    def _columns(self, first: list[str]) -> tuple[list[str], bool]:
        names = [cell.strip().lower() for cell in first]
        # A first row naming any contract column is a header; otherwise the file is
        # in the contract's column order with no header.
        if not set(names) & set(ALL_COLUMNS):
            return list(ALL_COLUMNS), False
        unknown = [name for name in names if name not in ALL_COLUMNS]
        missing = [name for name in REQUIRED_COLUMNS if name not in names]
        if unknown or missing or len(set(names)) != len(names):
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown)}")
            if len(set(names)) != len(names):
                problems.append("a column named twice")
            raise BadInput(
                f"{self.source}: the header has {'; '.join(problems)}",
                hint=f"columns are {','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]",
            )
        return names, True

    def __iter__(self) -> Iterator[LedgerDraft]:
        reader = self._reader
        progress = self._progress
        try:
            first = next(reader, None)
            if first is None:
                return
            columns, has_header = self._columns(first)
            width = len(columns)
            minimum = len(REQUIRED_COLUMNS) if not has_header else width
            pending = [] if has_header else [first]
            # Positions of each contract column in this file (-1: absent), so rows are
            # read by index rather than through a dict per row.
            at = [columns.index(name) if name in columns else -1 for name in ALL_COLUMNS]
            in_contract_order = at == list(range(len(ALL_COLUMNS)))
            parse = DraftParser()
            for row in chain(pending, reader):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                self.rows += 1
                count = len(row)
                if not minimum <= count <= width:
                    expected = str(width) if minimum == width else f"{minimum} to {width}"
                    self._bad(reader.line_num, f"expected {expected} columns, found {count}")
                    continue
                if progress is not None and not self.rows % PROGRESS_EVERY:
                    progress(PROGRESS_EVERY)
                try:
                    if in_contract_order:
                        draft = parse(*row)
                    else:
                        draft = parse(*[row[i] if 0 <= i < count else None for i in at])  # type: ignore[arg-type]
                except BadInput as exc:
                    self._bad(reader.line_num, exc.message)
                    continue
                if not self.bad_rows:
                    yield draft
        except csv.Error as exc:
            self._bad(reader.line_num, f"unreadable CSV ({exc})")
        except UnicodeDecodeError:
            raise BadInput(
                f"{self.source} is not UTF-8 text", hint="save the file as CSV UTF-8"
            ) from None
        if self.bad_rows:
            more = self.bad_rows - len(self.errors)
            listed = self.errors + ([f"… and {more} more bad rows"] if more > 0 else [])
            raise BadInput(
                f"{self.source}: {self.bad_rows} bad row{'s' if self.bad_rows != 1 else ''}; "
                "nothing was imported",
                hint="fix the rows listed and import the file again",
                errors=listed,
            )


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

    ``size_bytes`` (the file's size, when known) gives the store a row estimate.
    """
    rows = _CsvRows(stream, source, progress)
    if dry_run:
        for _ in rows:
            pass
        return ImportReport(source=source, rows=rows.rows, dry_run=True)
    expected = None if size_bytes is None else size_bytes // BYTES_PER_ROW_ESTIMATE
    outcome: ImportOutcome = store.import_ledger(rows, now, expected_rows=expected)
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
