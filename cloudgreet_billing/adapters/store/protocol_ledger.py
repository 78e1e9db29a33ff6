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
        """Record one entry; with a known ``external_id`` return the existing one and False."""
        ...

    def import_ledger(
        self, batches: Iterable[LedgerBatch], now: datetime, *, expected_rows: int | None = None
    ) -> ImportOutcome:
        """Record every batch's entries in one transaction, in order; an entry whose
        ``external_id`` is already recorded (or comes earlier in the import) is a duplicate.
        If iterating ``batches`` raises, nothing is recorded and the error propagates:
        imports are all-or-nothing. ``expected_rows`` (an estimate) lets a store choose a
        bulk-load strategy."""
        ...

    def list_ledger(self, query: LedgerQuery) -> list[LedgerEntry]:
        """Entries newest first."""
        ...

    def count_ledger(self, query: LedgerQuery) -> int:
        """How many entries match ``query``, whatever its ``limit``."""
        ...
