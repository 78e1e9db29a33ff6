"""The usage ledger's part of the store: ``billing_usage_ledger``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry
    from cloudgreet_billing.domain.ledger_batch import LedgerBatch


@dataclass(frozen=True, slots=True)
class LedgerQuery:
    """Filters for ``list_ledger``; ``until`` is exclusive."""

    customer_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """What a ledger import did: rows new to the ledger, and rows already there."""

    inserted: int
    duplicates: int


class LedgerOps(Protocol):
    """Record, import and list usage-ledger entries."""

    def record_ledger_entry(self, draft: LedgerDraft, now: datetime) -> tuple[LedgerEntry, bool]:
        """Record one entry; with a known ``external_id`` return the existing one and False
        if the draft repeats it, and raise ``ExternalIdConflicts`` (writing nothing) if it
        differs in what it records (``domain.ledger_identity``)."""
        ...

    def import_ledger(
        self,
        batches: Iterable[LedgerBatch],
        now: datetime,
        *,
        expected_rows: int | None = None,
        dry_run: bool = False,
    ) -> ImportOutcome:
        """Record every batch's entries in one transaction, in order; an entry that
        repeats one whose ``external_id`` is already recorded (or comes earlier in the
        import) is a duplicate. If any entry reuses an ``external_id`` with other facts,
        ``ExternalIdConflicts`` is raised, naming rows by their 1-based place in the
        import, and nothing is recorded. If iterating ``batches`` raises, nothing is
        recorded and the error propagates: imports are all-or-nothing. ``expected_rows``
        (an estimate) lets a store choose a bulk-load strategy. ``dry_run``: judge every
        row as a real import would, return what it would do, and record nothing."""
        ...

    def list_ledger(self, query: LedgerQuery) -> list[LedgerEntry]:
        """Entries newest first."""
        ...

    def count_ledger(self, query: LedgerQuery) -> int:
        """How many entries match ``query``, whatever its ``limit``."""
        ...
