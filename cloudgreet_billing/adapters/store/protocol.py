"""The store, in the finance team's words.

Every implementation (SQLite, PostgreSQL, and later Supabase through PostgREST) offers
these operations and passes the one contract suite in ``tests/store``. Each operation is
atomic: it either happens whole or not at all. Callers never see SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cloudgreet_billing.adapters.store.protocol_alerts import AlertsOps
from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft, AuditOps, AuditRecord
from cloudgreet_billing.adapters.store.protocol_dunning import DunningOps
from cloudgreet_billing.adapters.store.protocol_finance import FinanceOps
from cloudgreet_billing.adapters.store.protocol_mirror import MirrorOps
from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry

__all__ = ["TABLES", "AuditDraft", "AuditRecord", "ImportOutcome", "LedgerQuery", "Store"]

#: Every table of the schema, in dependency order.
TABLES: tuple[str, ...] = (
    "billing_schema_version",
    "billing_settings",
    "billing_customers",
    "billing_subscriptions",
    "billing_invoices",
    "billing_stripe_events",
    "billing_alerts",
    "billing_alert_notes",
    "billing_usage_ledger",
    "billing_dunning_events",
    "billing_audit_log",
)


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


class Store(MirrorOps, AlertsOps, DunningOps, FinanceOps, AuditOps, Protocol):
    """Billing state: schema, ledger, audit log, shared settings, and the areas above."""

    #: ``sqlite`` or ``postgres`` (later ``supabase``).
    backend: str
    #: Where the data lives, safe to print (passwords redacted).
    location: str

    def close(self) -> None: ...

    # --- schema -------------------------------------------------------------
    def schema_version(self) -> int | None:
        """The applied schema version, or None when the schema is not installed."""
        ...

    def migrate(self) -> list[int]:
        """Apply every missing migration, in order; return the versions applied."""
        ...

    def row_counts(self) -> dict[str, int]:
        """Rows per billing table."""
        ...

    # --- usage ledger -------------------------------------------------------
    def record_ledger_entry(self, draft: LedgerDraft, now: datetime) -> tuple[LedgerEntry, bool]:
        """Record one entry; with a known ``external_id`` return the existing one and False."""
        ...

    def import_ledger(
        self, drafts: Iterable[LedgerDraft], now: datetime, *, expected_rows: int | None = None
    ) -> ImportOutcome:
        """Record every draft in one transaction. If iterating ``drafts`` raises, nothing is
        recorded and the error propagates: imports are all-or-nothing. ``expected_rows``
        (an estimate) lets a store choose a bulk-load strategy."""
        ...

    def list_ledger(self, query: LedgerQuery) -> list[LedgerEntry]:
        """Entries newest first."""
        ...

    # --- shared settings (sync cursor, dunning pause) -----------------------
    def get_setting(self, key: str) -> Any | None:
        """A JSON value, or None when unset."""
        ...

    def put_setting(self, key: str, value: Any, actor: str, now: datetime) -> None:
        """Set a JSON value."""
        ...
