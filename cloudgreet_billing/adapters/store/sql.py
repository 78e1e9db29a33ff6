"""What SQLite and PostgreSQL share: one implementation of the store's operations.

``SqlStore`` gathers the area mixins (``sql_<area>.py``); this module holds what is left:
the schema and the shared settings. Dialect subclasses add their own fast paths (bulk
import with COPY, claiming with ``SKIP LOCKED``).

Every command opens the store, so the mixins import their areas' record types inside the
methods that build them: defining a frozen dataclass costs about half a millisecond, and
``ledger list`` should not pay for the dunning, mirror and finance records. The statuses
the SQL is built from come from ``domain.statuses``, which defines no records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudgreet_billing.adapters.store.migrations import TABLES
from cloudgreet_billing.adapters.store.sql_actions import ActionsSql
from cloudgreet_billing.adapters.store.sql_alerts import AlertsSql
from cloudgreet_billing.adapters.store.sql_drift import DriftSql
from cloudgreet_billing.adapters.store.sql_dunning import DunningSql
from cloudgreet_billing.adapters.store.sql_exemptions import ExemptionsSql
from cloudgreet_billing.adapters.store.sql_finance import FinanceSql
from cloudgreet_billing.adapters.store.sql_quarantine import QuarantineSql
from cloudgreet_billing.adapters.store.sql_recovery import RecoverySql


class _RolledBack(Exception):
    """Ends a transaction that was only a probe, so that it rolls back."""


# Finance reads the mirror and the ledger, so it brings MirrorSql and LedgerSql; alerts,
# actions and the mirror each write the audit log, so AuditSql comes with them; quarantine
# applies events as the mirror does, so it brings MirrorSql; a run's claim reads the
# exemptions, so DunningSql brings ExemptionsSql; recovery reads what finance streams, so
# it brings FinanceSql.
class SqlStore(
    RecoverySql,
    FinanceSql,
    AlertsSql,
    DunningSql,
    ExemptionsSql,
    ActionsSql,
    QuarantineSql,
    DriftSql,
):
    """Every store operation over a DB-API connection; see ``SqliteStore``, ``PostgresStore``."""

    # --- schema -------------------------------------------------------------
    def schema_version(self) -> int | None:
        if not self._table_exists("billing_schema_version"):
            return None
        row = self._execute("SELECT max(version) FROM billing_schema_version").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _table_exists(self, table: str) -> bool:
        raise NotImplementedError

    def check_writable(self) -> None:
        """Raise the driver's error when the store refuses writes (a read-only file, folder
        or transaction, no privilege); writes nothing. Needs the schema."""
        try:
            with self._transaction():
                # Checked before any row is looked at: on SQLite the write lock, on
                # PostgreSQL read-only transactions and the UPDATE privilege.
                self._execute("UPDATE billing_settings SET key = key WHERE 1 = 0")
                raise _RolledBack
        except _RolledBack:
            pass

    def row_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table in TABLES:
            # Table names come from the TABLES constant, never from input.
            row = self._execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts

    # --- shared settings ----------------------------------------------------
    def get_setting(self, key: str) -> Any | None:
        row = self._execute("SELECT value FROM billing_settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._json_value(row[0])

    def put_setting(self, key: str, value: Any, actor: str, now: datetime) -> None:
        with self._transaction():
            self._execute(
                "INSERT INTO billing_settings (key, value, updated_at, updated_by) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (key, self._json_param(value), now, actor),
            )
