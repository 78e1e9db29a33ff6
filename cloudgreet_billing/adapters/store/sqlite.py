"""The embedded store: one SQLite file, WAL mode, created readable by its owner only."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.migrations import sqlite_migrations
from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome
from cloudgreet_billing.adapters.store.sql import SqlStore
from cloudgreet_billing.adapters.store.sql_base import Cursor, chunked
from cloudgreet_billing.adapters.store.sql_finance import STREAM_BATCH
from cloudgreet_billing.adapters.store.sql_ledger import IMPORT_BATCH, INSERT_LEDGER
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.domain.money import THREE_DECIMAL, ZERO_DECIMAL
from cloudgreet_billing.errors import StoreError

if TYPE_CHECKING:
    from cloudgreet_billing.domain.ledger import LedgerDraft
    from cloudgreet_billing.domain.reconciliation import Window

# Times are stored as fixed-width ISO 8601 text with microseconds and a Z
# (2026-11-24T09:00:00.000000Z), so that text order is time order in comparisons.
# Ledger imports at least this large (estimated) into a table no more than four times its
# size drop the secondary indexes for the load and rebuild them after, inside the same
# transaction: a sorted rebuild costs a fraction of a million random b-tree inserts.
BULK_LOAD_MIN_ROWS = 50_000
#: The CSV export's cell rules (``domain.export``) as SQLite expressions.
FORMULA_START = "('=', '+', '-', '@', char(9), char(13))"
NEEDS_QUOTES = "('*[\",' || char(10) || char(13) || ']*')"
#: Page cache for export scans, in KiB (negative: SQLite's unit for a size in KiB).
EXPORT_CACHE_SIZE = -2048
ZERO_DECIMAL_CODES = "(" + ", ".join(f"'{code}'" for code in sorted(ZERO_DECIMAL)) + ")"
THREE_DECIMAL_CODES = "(" + ", ".join(f"'{code}'" for code in sorted(THREE_DECIMAL)) + ")"


def _adapt_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime reached the store; times must be UTC-aware")
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime, and imports adapt millions of times.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


sqlite3.register_adapter(datetime, _adapt_time)


def _create_private(path: Path) -> None:
    """Create the database file mode 0600 (and its folder 0700) before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = path
        self.location = str(path)
        try:
            _create_private(path)
            # Autocommit mode: transactions are explicit, so writers can take the lock
            # up front (BEGIN IMMEDIATE) instead of failing to upgrade a read lock later.
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA cache_size=-65536")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the SQLite store at {path}: {exc}",
                hint="check the folder is writable, or set BILLING_DATABASE_URL",
            ) from exc
        self._depth = 0

    def close(self) -> None:
        self._conn.close()

    def _execute(self, query: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(query, params)  # type: ignore[return-value]

    def _executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> int:
        return self._conn.executemany(query, rows).rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._depth:
            # Already inside this store's transaction: join it.
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._conn.rollback()
            raise
        else:
            self._conn.commit()
        finally:
            self._depth = 0

    def _table_exists(self, table: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return row is not None

    def migrate(self) -> list[int]:
        applied: list[int] = []
        current = self.schema_version() or 0
        now = utcnow()
        for migration in sqlite_migrations():
            if migration.version <= current:
                continue
            script = migration.path.read_text(encoding="utf-8")
            with self._transaction():
                # executescript would commit our transaction; run statement by statement.
                for statement in _statements(script):
                    self._conn.execute(statement)
                self._conn.execute(
                    "INSERT INTO billing_schema_version (version, name, applied_at) "
                    "VALUES (?, ?, ?) ON CONFLICT (version) DO NOTHING",
                    (migration.version, migration.name, now),
                )
            applied.append(migration.version)
        return applied

    # --- finance: the dialect parts of the exports ------------------------------------
    def _sql_char(self, code: int) -> str:
        return f"char({code})"

    def _sql_time_cell(self, column: str) -> str:
        # Stored exactly as the export writes times: fixed width, microseconds, Z.
        return column

    def _sql_major(self, amount: str, currency: str) -> str:
        """``domain.money.to_major_string`` with one printf per amount (integers only)."""

        def scaled(places: int) -> str:
            sign = f"(CASE WHEN {amount} < 0 THEN '-' ELSE '' END)"
            unit = 10**places
            whole, fraction = f"abs({amount}) / {unit}", f"abs({amount}) % {unit}"
            return f"printf('%s%d.%0{places}d', {sign}, {whole}, {fraction})"

        return (
            f"(CASE WHEN {currency} IN {ZERO_DECIMAL_CODES} THEN printf('%d', {amount}) "
            f"WHEN {currency} IN {THREE_DECIMAL_CODES} THEN {scaled(3)} ELSE {scaled(2)} END)"
        )

    def _sql_quoted(self, column: str) -> str:
        # One GLOB and one prefix test per cell; the patterns are constants SQLite hoists.
        formula = f"(CASE WHEN substr({column}, 1, 1) IN {FORMULA_START} THEN '''' ELSE '' END)"
        return (
            f"(CASE WHEN {column} IS NULL OR {column} = '' THEN '' "
            f"WHEN {column} GLOB {NEEDS_QUOTES} "
            f"THEN '\"' || {formula} || replace({column}, '\"', '\"\"') || '\"' "
            f"ELSE {formula} || {column} END)"
        )

    def ledger_csv_chunks(self, window: Window) -> Iterator[tuple[str, int]]:
        """SQLite builds each line itself (one printf a row); Python only joins batches."""
        cells = self._sql_ledger_cells(quote=True)
        line = f"printf('{','.join('%s' for _ in cells)}' || char(10), {', '.join(cells)})"
        # A scan reads each page once: keep the page cache small for it, not the store's
        # large default, so the export stays in constant (and small) memory.
        (cache_size,) = self._conn.execute("PRAGMA cache_size").fetchone()
        self._conn.execute(f"PRAGMA cache_size = {EXPORT_CACHE_SIZE}")
        try:
            cursor = self._conn.execute(self._sql_ledger_export([line]), (window.start, window.end))
            while rows := cursor.fetchmany(STREAM_BATCH):
                yield "".join([row[0] for row in rows]), len(rows)
        finally:
            self._conn.execute(f"PRAGMA cache_size = {int(cache_size)}")

    # --- usage ledger: bulk import ------------------------------------------------------
    def import_ledger(
        self,
        drafts: Iterable[LedgerDraft],
        now: datetime,
        *,
        expected_rows: int | None = None,
    ) -> ImportOutcome:
        """One transaction; a large load drops and rebuilds the secondary indexes.

        Deliberately single-threaded: sqlite3 releases the GIL around every row's step,
        so a parsing thread beside the writer turns each row into two contended GIL
        hand-offs, which measured slower than doing both in turn.
        """
        created_at = _adapt_time(now)
        # Imported rows share few distinct times; adapt each once.
        times: dict[datetime, str] = {}

        def occurred(moment: datetime) -> str:
            text = times.get(moment)
            if text is None:
                if len(times) > 100_000:
                    times.clear()
                text = times[moment] = _adapt_time(moment)
            return text

        rows = (
            (
                d.customer_id,
                d.kind,
                d.amount,
                d.currency,
                occurred(d.occurred_at),
                d.invoice_id,
                d.description,
                d.external_id,
                created_at,
            )
            for d in drafts
        )
        seen = inserted = 0
        with self._transaction():
            rebuild = self._drop_ledger_indexes_for_bulk_load(expected_rows)
            for batch in chunked(rows, IMPORT_BATCH):
                seen += len(batch)
                inserted += self._conn.executemany(INSERT_LEDGER, batch).rowcount
            for statement in rebuild:
                self._conn.execute(statement)
        return ImportOutcome(inserted=inserted, duplicates=seen - inserted)

    def _drop_ledger_indexes_for_bulk_load(self, expected_rows: int | None) -> list[str]:
        """Inside the import transaction: drop secondary ledger indexes when the load is big
        relative to the table, and return the statements that rebuild them."""
        if expected_rows is None or expected_rows < BULK_LOAD_MIN_ROWS:
            return []
        row = self._conn.execute("SELECT max(id) FROM billing_usage_ledger").fetchone()
        if row and row[0] and row[0] > 4 * expected_rows:
            return []
        # The unique external_id index stays: it is what makes re-imports idempotent.
        indexes = self._conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'billing_usage_ledger' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            self._conn.execute(f'DROP INDEX "{name}"')
        return [sql for _, sql in indexes]


def _statements(script: str) -> Iterator[str]:
    """Split a DDL script (no triggers, no semicolons in literals) into statements."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    for statement in "\n".join(lines).split(";"):
        if statement.strip():
            yield statement
