"""The store, in the finance team's words.

Every implementation (SQLite, PostgreSQL, and Supabase through PostgREST) offers
these operations and passes the one contract suite in ``tests/store``. Each operation is
atomic: it either happens whole or not at all. Callers never see SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from cloudgreet_billing.adapters.store.migrations import TABLES
from cloudgreet_billing.adapters.store.protocol_actions import ActionsOps
from cloudgreet_billing.adapters.store.protocol_alerts import AlertsOps
from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft, AuditOps, AuditRecord
from cloudgreet_billing.adapters.store.protocol_drift import DriftOps
from cloudgreet_billing.adapters.store.protocol_dunning import DunningOps
from cloudgreet_billing.adapters.store.protocol_exemptions import ExemptionsOps
from cloudgreet_billing.adapters.store.protocol_finance import FinanceOps
from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome, LedgerOps, LedgerQuery
from cloudgreet_billing.adapters.store.protocol_mirror import MirrorOps
from cloudgreet_billing.adapters.store.protocol_quarantine import QuarantineOps
from cloudgreet_billing.adapters.store.protocol_recovery import RecoveryOps
from cloudgreet_billing.errors import BillingError

__all__ = ["TABLES", "AuditDraft", "AuditRecord", "ImportOutcome", "LedgerQuery", "Store"]


class Store(
    LedgerOps,
    MirrorOps,
    AlertsOps,
    DunningOps,
    ExemptionsOps,
    FinanceOps,
    AuditOps,
    ActionsOps,
    QuarantineOps,
    DriftOps,
    RecoveryOps,
    Protocol,
):
    """Billing state: schema, ledger, audit log, shared settings, and the areas above."""

    #: ``sqlite``, ``postgres`` or ``supabase``.
    backend: str
    #: Where the data lives, safe to print (passwords redacted); an absolute path for SQLite.
    location: str
    #: Whether opening the store made a new, empty one (SQLite creates its file).
    created: bool

    def close(self) -> None: ...

    def explain_failure(self, exc: BaseException) -> BillingError | None:
        """What a failure of the store itself (read-only, locked, not a database) means,
        with the fix; None when ``exc`` is not one the store can explain."""
        ...

    def check_writable(self) -> None:
        """Raise when the store refuses writes; writes nothing. Needs the schema."""
        ...

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

    # --- shared settings (sync cursor, dunning pause) -----------------------
    def get_setting(self, key: str) -> Any | None:
        """A JSON value, or None when unset."""
        ...

    def put_setting(self, key: str, value: Any, actor: str, now: datetime) -> None:
        """Set a JSON value."""
        ...
