"""The embedded store: one SQLite file, WAL mode, created readable by its owner only."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.migrations import sqlite_migrations
from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome
from cloudgreet_billing.adapters.store.sql import SqlStore
from cloudgreet_billing.adapters.store.sql_base import Cursor
from cloudgreet_billing.adapters.store.sql_finance import LEDGER_EXPORT_ORDER
from cloudgreet_billing.adapters.store.sql_ledger import (
    CONFLICT_COLUMNS,
    INSERT_LEDGER,
    LEDGER_VALUES,
    same_facts,
)
from cloudgreet_billing.adapters.store.sql_ledger import LEDGER_COLUMNS as STORED_COLUMNS
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.domain.export import FORMULA_PREFIXES, LEDGER_COLUMNS
from cloudgreet_billing.domain.ledger_identity import (
    MAX_LISTED_CONFLICTS,
    ExternalIdConflict,
    ExternalIdConflicts,
)
from cloudgreet_billing.domain.money import THREE_DECIMAL, ZERO_DECIMAL
from cloudgreet_billing.domain.words import plural
from cloudgreet_billing.errors import (
    BadInput,
    BillingError,
    ConfigError,
    StoreError,
    Unavailable,
)

if TYPE_CHECKING:
    from cloudgreet_billing.domain.ledger_batch import LedgerBatch
    from cloudgreet_billing.domain.reconciliation import Window

# Times are stored as fixed-width ISO 8601 text with microseconds and a Z
# (2026-11-24T09:00:00.000000Z), so that text order is time order in comparisons.
#: Page size of a new store, in bytes. Twice SQLite's default: a million-row import writes
#: fewer, fuller pages and WAL frames (measured: about a sixth less time in the store).
PAGE_SIZE = 8192
#: Pages of write-ahead log between automatic checkpoints (32 MB at ``PAGE_SIZE``).
CHECKPOINT_PAGES = 4096
# Ledger imports at least this large (estimated) into a table no more than four times its
# size drop the ledger's indexes for the load and rebuild them after, inside the same
# transaction: a sorted rebuild costs a fraction of a million random b-tree inserts.
BULK_LOAD_MIN_ROWS = 50_000
#: Distinct times an import keeps adapted to their stored text (bounded for endless imports).
STORED_TIMES_KEPT = 100_000
#: Rows per INSERT statement in an import. A statement per row costs more than binding
#: the row; much larger statements touch enough index pages to spill SQLite's statement
#: journal to a temporary file (measured: 500 rows was slower than 100).
ROWS_PER_INSERT = 100
PARAMS_PER_ROW = LEDGER_VALUES.count("?")
#: The unique index on the ledger's external_id (migration 2), which a bulk load drops.
EXTERNAL_KEY = "billing_usage_ledger_external_key"
#: External ids of an import's first batch looked up to tell a repeated import.
PROBE_IDS = 500
#: An index a bulk load builds only to find repeated external ids, and drops again.
SCRATCH_INDEX = "billing_usage_ledger_import_scratch"
#: Where an import's rows go once one repeats an external_id (``import_ledger``).
STAGING = "temp.billing_ledger_import"
#: Threads SQLite's sorter may use when a bulk load rebuilds the indexes.
SORT_THREADS = min(os.cpu_count() or 1, 4)
#: Page cache during a bulk load, in KiB (negative: SQLite's unit for a size in KiB).
BULK_CACHE_SIZE = -16384
#: The CSV export's cell rules (``domain.export``) as SQLite expressions: the code points
#: that start a formula (``unicode(cell)`` is the first one's), and the cells CSV quotes.
FORMULA_START = "(" + ", ".join(str(ord(mark)) for mark in FORMULA_PREFIXES) + ")"
NEEDS_QUOTES = "('*[\",' || char(10) || char(13) || ']*')"
#: Page cache for export scans, in KiB (negative: SQLite's unit for a size in KiB).
EXPORT_CACHE_SIZE = -2048
#: Ledger rows per page of the CSV export: SQLite joins a page's lines into one string.
EXPORT_PAGE_ROWS = 5_000
ZERO_DECIMAL_CODES = "(" + ", ".join(f"'{code}'" for code in sorted(ZERO_DECIMAL)) + ")"
THREE_DECIMAL_CODES = "(" + ", ".join(f"'{code}'" for code in sorted(THREE_DECIMAL)) + ")"
#: The currencies whose major unit does not have two decimals: one lookup settles most rows.
OTHER_EXPONENT_CODES = (
    "(" + ", ".join(f"'{code}'" for code in sorted(ZERO_DECIMAL | THREE_DECIMAL)) + ")"
)
#: The export's order is unique per row (it ends with the id), so it also keys its pages.
_PAGE_KEY = f"({LEDGER_EXPORT_ORDER})"
_PAGE_KEY_VALUE = "(" + ", ".join("?" for _ in LEDGER_EXPORT_ORDER.split(",")) + ")"


def _adapt_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime reached the store; times must be UTC-aware")
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime, and imports adapt millions of times.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


#: Distinct times the driver keeps adapted to their stored text. A sync binds the same few
#: times again and again (the run's ``now``, each event's ``created``): about ten an event.
ADAPTED_TIMES_KEPT = 4096
# Equal aware datetimes are the same instant, so they share one stored text.
sqlite3.register_adapter(datetime, lru_cache(maxsize=ADAPTED_TIMES_KEPT)(_adapt_time))


#: How long a command waits for another process's write lock before it gives up (exit 75).
BUSY_TIMEOUT_MS = 30_000
#: How long ``doctor``'s write probe waits for that lock.
WRITE_PROBE_TIMEOUT_MS = 2_000


def _create_private(path: Path, *, create_folder: bool) -> bool:
    """Create the database file mode 0600 before SQLite opens it (and, for the default
    location only, its folder 0700); returns whether the file is new."""
    if create_folder:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif not path.parent.is_dir():
        raise ConfigError(
            f"the folder {path.parent} of the SQLite store {path.name} does not exist",
            hint=f"create it with mkdir -p {path.parent}, or fix BILLING_DATABASE_URL; "
            "sqlite:///billing.db is relative to the working directory, "
            "sqlite:////var/lib/cloudgreet/billing.db is absolute",
        )
    if path.exists():
        return False
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        # Another process created it a moment ago: theirs is the new store.
        return False
    os.close(fd)
    return True


def describe_failure(exc: BaseException, path: Path) -> BillingError | None:
    """What a failure of the SQLite store at ``path`` means for its operator, with the fix;
    None when ``exc`` is not the store's own condition (a constraint, a bug)."""
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _read_only(path)
    if not isinstance(exc, sqlite3.Error) or isinstance(
        exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.ProgrammingError
    ):
        return None
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return Unavailable(
            f"another process holds the store {path}; retry",
            hint="a long import or sync may be running; retry when it is done "
            "(cron may simply retry later)",
            code="store_unavailable",
        )
    if name == "SQLITE_NOTADB":
        return BadInput(
            f"{path} is not a SQLite database",
            hint=f"restore it from a backup, fix BILLING_DATABASE_URL if it names the wrong "
            f"file, or move it away with mv {path} {path}.broken and the next command "
            "starts a new, empty store",
            code="store_not_a_database",
        )
    if name.startswith("SQLITE_CORRUPT"):
        return StoreError(
            f"the SQLite store {path} is damaged: {exc}",
            hint=f"restore it from a backup, or move it away with mv {path} {path}.broken "
            "to start a new, empty store; sqlite3's .recover may rescue its rows",
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return _read_only(path)
    if name == "SQLITE_FULL":
        return StoreError(
            f"the disk that holds the SQLite store {path} is full; nothing was written",
            hint="free some space, then run the command again",
        )
    if name.startswith("SQLITE_IOERR"):
        return StoreError(
            f"the SQLite store {path} could not be read or written: {exc}",
            hint="check the disk and the file system it is on",
        )
    return None


def unwritable(path: Path) -> StoreError | None:
    """Why this user could not write the SQLite store at ``path`` (the file, or the folder
    its ``-wal`` and ``-shm`` files go in), or None; looks without opening it."""
    folder = path.parent
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(folder, os.W_OK):
        return _read_only(path)
    return None


def _read_only(path: Path) -> StoreError:
    """Which part refuses writes: the file, or the folder SQLite keeps ``-wal`` and
    ``-shm`` in."""
    folder = path.parent
    if path.exists() and not os.access(path, os.W_OK):
        return StoreError(
            f"the SQLite store {path} is read-only: this user cannot write the file",
            hint=f"make it writable with chmod u+w {path} or run as its owner; "
            "or point BILLING_DATABASE_URL at a writable copy",
            code="store_read_only",
        )
    if not os.access(folder, os.W_OK):
        return StoreError(
            f"the SQLite store {path} cannot be written: this user cannot write its folder "
            f"{folder}, where SQLite keeps the store's -wal and -shm files",
            hint=f"make the folder writable with chmod u+w {folder} or run as its owner; "
            "or point BILLING_DATABASE_URL at a store in a writable folder",
            code="store_read_only",
        )
    return StoreError(
        f"the SQLite store {path} refuses writes: its file system may be read-only",
        hint="mount it read-write, or point BILLING_DATABASE_URL at a writable store",
        code="store_read_only",
    )


class SqliteStore(SqlStore):
    backend = "sqlite"
    # BEGIN IMMEDIATE takes the one write lock for the whole transaction.
    _single_writer = True

    def __init__(
        self, path: Path, *, busy_timeout_ms: int | None = None, create_folder: bool = False
    ) -> None:
        # Absolute, so that every message says which file: sqlite:///x.db depends on the
        # working directory, and a cron job started elsewhere gets another store.
        self.path = Path(os.path.normpath(path.absolute()))
        self.location = str(self.path)
        timeout = (BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms) / 1000
        try:
            self.created = _create_private(self.path, create_folder=create_folder)
            # Autocommit mode: transactions are explicit, so writers can take the lock
            # up front (BEGIN IMMEDIATE) instead of failing to upgrade a read lock later.
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=timeout
            )
            # Takes effect only while the file is still empty: a new store.
            self._conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA cache_size=-65536")
            # A checkpoint every 32 MB of log, not SQLite's 8 MB: each copies the log into
            # the file and syncs it, and a sync's batches rewrote the same index pages at
            # every one (10,000 events: 0.04 s of CPU and 0.05 s of waiting for the disk).
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        except (OSError, sqlite3.Error) as exc:
            known = describe_failure(exc, self.path)
            if known is not None:
                raise known from exc
            raise StoreError(
                f"cannot open the SQLite store at {self.path}: {exc}",
                hint="check the folder is writable, or set BILLING_DATABASE_URL",
            ) from exc
        self._depth = 0

    def explain_failure(self, exc: BaseException) -> BillingError | None:
        return describe_failure(exc, self.path)

    def check_writable(self) -> None:
        # A probe waits a moment for the write lock, not a command's whole busy timeout:
        # ``doctor`` should answer, and a held lock is worth saying by itself.
        (waited,) = self._conn.execute("PRAGMA busy_timeout").fetchone()
        self._conn.execute(f"PRAGMA busy_timeout = {min(int(waited), WRITE_PROBE_TIMEOUT_MS)}")
        try:
            super().check_writable()
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(waited)}")

    def close(self) -> None:
        self._conn.close()

    def _execute(self, query: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(query, params)  # type: ignore[return-value]

    def _store_fault(self, exc: BaseException) -> bool:
        # sqlite3 raises a constraint as IntegrityError, a value it cannot hold as
        # DataError, a value it cannot bind as ProgrammingError or OverflowError: the data's
        # fault. OperationalError and the rest carry the store's own condition (BUSY,
        # LOCKED, READONLY, IOERR, FULL, CORRUPT…), which is not the data's.
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.ProgrammingError):
            return False
        return isinstance(exc, sqlite3.Error)

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
            # A table is rebuilt to change a constraint (SQLite's documented procedure):
            # with foreign keys on, dropping the old table would cascade to the rows that
            # reference it. The pragma is a no-op inside a transaction, so it goes around
            # it, and the keys are checked before the migration commits.
            self._conn.execute("PRAGMA foreign_keys=OFF")
            try:
                with self._transaction():
                    # executescript would commit our transaction; run statement by statement.
                    for statement in _statements(script):
                        self._conn.execute(statement)
                    broken = self._conn.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(
                            f"migration {migration.name} would break "
                            f"{plural(len(broken), 'foreign key')}, first in {broken[0][0]}; "
                            "nothing was changed"
                        )
                    self._conn.execute(
                        "INSERT INTO billing_schema_version (version, name, applied_at) "
                        "VALUES (?, ?, ?) ON CONFLICT (version) DO NOTHING",
                        (migration.version, migration.name, now),
                    )
            finally:
                self._conn.execute("PRAGMA foreign_keys=ON")
            applied.append(migration.version)
        return applied

    # --- finance: the dialect parts of the exports ------------------------------------
    def _sql_char(self, code: int) -> str:
        return f"char({code})"

    def _sql_time_cell(self, column: str) -> str:
        # Stored exactly as the export writes times: fixed width, microseconds, Z.
        return column

    def _sql_quoted(self, column: str, *, formula: bool = True) -> str:
        """``domain.export.text_cell`` of a text column as a ``printf`` argument: NULL stays
        NULL, which ``%s`` writes as the empty cell. ``formula=False`` for a column that
        never starts like a formula."""
        text = column
        if formula:
            text = (
                f"(CASE WHEN unicode({column}) IN {FORMULA_START} THEN '''' || {column} "
                f"ELSE {column} END)"
            )
        return (
            f"(CASE WHEN {column} GLOB {NEEDS_QUOTES} "
            f"THEN '\"' || replace({text}, '\"', '\"\"') || '\"' ELSE {text} END)"
        )

    def _sql_ledger_line(self, *, quote: bool) -> str:
        """``domain.export.ledger_line`` as one ``printf`` per row.

        Unquoted (``quote=False``), text cells are only neutralised: exact for every row
        without ``"``, ``,``, CR or LF in a cell, and cheaper. ``customer_id`` and
        ``invoice_id`` start with ``cus_`` and ``in_``, and ``kind`` and ``currency`` come
        from closed lists (the CHECK constraints, which ``domain.ledger``'s validation
        restates for bulk loads), so none of them is ever a formula, and
        ``kind`` and ``currency`` never need quotes. ``amount`` is an integer column.
        """

        def text(column: str, *, formula: bool) -> tuple[str, list[str]]:
            if quote:
                return "%s", [self._sql_quoted(column, formula=formula)]
            if not formula:
                return "%s", [column]
            mark = f"(CASE WHEN unicode({column}) IN {FORMULA_START} THEN '''' ELSE '' END)"
            return "%s%s", [mark, column]

        def line(places: int) -> str:
            cells = (
                ("%d", ["id"]),
                ("%s", ["occurred_at"]),
                text("customer_id", formula=False),
                ("%s", ["kind"]),
                ("%d", ["amount"]),
                _major_cell("amount", places),
                ("%s", ["currency"]),
                text("invoice_id", formula=False),
                text("description", formula=True),
                text("external_id", formula=True),
                ("%s", ["created_at"]),
            )
            formats = ",".join(conversion for conversion, _ in cells)
            arguments = ", ".join(argument for _, group in cells for argument in group)
            return f"printf('{formats}' || char(10), {arguments})"

        return (
            f"(CASE WHEN currency NOT IN {OTHER_EXPONENT_CODES} THEN {line(2)} "
            f"WHEN currency IN {ZERO_DECIMAL_CODES} THEN {line(0)} ELSE {line(3)} END)"
        )

    def ledger_csv_chunks(self, window: Window) -> Iterator[tuple[str, int]]:
        """The export a page at a time, every page read in one transaction: one snapshot,
        however long the export takes.

        SQLite builds each line (one ``printf`` a row) and joins a page of them, so Python
        handles one string per page instead of one per row. Lines are built unquoted, which
        is exact unless a cell holds a ``"``, comma, CR or LF. A page where one did holds a
        ``"`` or CR, or more commas or line feeds than its lines' own; it is built again
        with quotes where cells need them, and so are the pages after it until one needs
        none.
        """
        unquoted, quoted = self._sql_ledger_line(quote=False), self._sql_ledger_line(quote=True)
        separators = len(LEDGER_COLUMNS) - 1
        # A scan reads each page once: keep the page cache small for it, not the store's
        # large default, so the export stays in constant (and small) memory.
        (cache_size,) = self._conn.execute("PRAGMA cache_size").fetchone()
        self._conn.execute(f"PRAGMA cache_size = {EXPORT_CACHE_SIZE}")
        # Inside a transaction already (the caller's), the pages read in that one.
        own = not self._conn.in_transaction
        if own:
            self._conn.execute("BEGIN")
        try:
            quoting, after = False, None
            while True:
                where, params = self._ledger_page_start(window, after)
                text, rows = self._ledger_page(quoted if quoting else unquoted, where, params)
                plain = (
                    text.count(",") == separators * rows
                    and text.count("\n") == rows
                    and '"' not in text
                    and "\r" not in text
                )
                if not (plain or quoting):
                    text, rows = self._ledger_page(quoted, where, params)
                quoting = not plain
                if rows:
                    yield text, rows
                if rows < EXPORT_PAGE_ROWS:
                    return
                # The next page starts after this one's last row.
                if plain:
                    # One line per row, so the last line is the last row's: it starts
                    # with the id.
                    start = text.rfind("\n", 0, -1) + 1
                    last_id = int(text[start : text.index(",", start)])
                    after = self._conn.execute(
                        f"SELECT {LEDGER_EXPORT_ORDER} FROM billing_usage_ledger WHERE id = ?",
                        (last_id,),
                    ).fetchone()
                else:
                    after = self._conn.execute(
                        f"SELECT {LEDGER_EXPORT_ORDER} FROM billing_usage_ledger WHERE {where} "
                        f"ORDER BY {LEDGER_EXPORT_ORDER} LIMIT 1 OFFSET {EXPORT_PAGE_ROWS - 1}",
                        params,
                    ).fetchone()
        finally:
            if own:
                self._conn.execute("COMMIT")
            self._conn.execute(f"PRAGMA cache_size = {int(cache_size)}")

    def _ledger_page_start(
        self, window: Window, after: Sequence[Any] | None
    ) -> tuple[str, list[Any]]:
        """The condition and parameters of the export's rows from the window's start, or
        from just after the key ``after``, to the window's end."""
        if after is None:
            return "occurred_at >= ? AND occurred_at < ?", [window.start, window.end]
        return f"{_PAGE_KEY} > {_PAGE_KEY_VALUE} AND occurred_at < ?", [*after, window.end]

    def _ledger_page(self, line: str, where: str, params: Sequence[Any]) -> tuple[str, int]:
        """The next ``EXPORT_PAGE_ROWS`` rows' lines joined, in the export's order, and how
        many there are.

        ``group_concat`` joins rows in the order the subquery yields them: SQLite keeps
        the ORDER BY of a FROM-clause subquery that has a LIMIT (select.c, on omitting
        ORDER BY in subqueries). A test holds the order across pages.
        """
        text, rows = self._conn.execute(
            f"SELECT group_concat(line, ''), count(*) FROM (SELECT {line} AS line "
            f"FROM billing_usage_ledger WHERE {where} "
            f"ORDER BY {LEDGER_EXPORT_ORDER} LIMIT {EXPORT_PAGE_ROWS})",
            params,
        ).fetchone()
        return text or "", rows

    # --- usage ledger: bulk import ------------------------------------------------------
    def import_ledger(
        self,
        batches: Iterable[LedgerBatch],
        now: datetime,
        *,
        expected_rows: int | None = None,
        dry_run: bool = False,
    ) -> ImportOutcome:
        """One transaction, ``ROWS_PER_INSERT`` rows per statement; a load large for the
        table is a bulk load (``_bulk_load``). A dry run does all of it and rolls back.

        Deliberately single-threaded: sqlite3 releases the GIL around every statement, so
        a parsing thread beside the writer contends for it at every hand-off, which
        measured slower than doing both in turn.
        """
        # The first batch tells a bulk load whether the file was imported before.
        pending = iter(batches)
        first = next(pending, None)
        if first is None:
            return ImportOutcome(inserted=0, duplicates=0)
        try:
            with self._transaction():
                outcome = self._import_in_transaction(first, pending, now, expected_rows)
                if dry_run:
                    raise _DryRun(outcome)
        except _DryRun as done:
            return done.outcome
        return outcome

    def _import_in_transaction(
        self,
        first: LedgerBatch,
        pending: Iterator[LedgerBatch],
        now: datetime,
        expected_rows: int | None,
    ) -> ImportOutcome:
        """The rows go straight into the ledger until a statement skips one (its
        external_id is taken): that statement's rows are taken out again, and they and
        every later row go to a staging table, which is compared with the ledger in one
        query (``_staged_conflicts``) and then inserted. So an import with no repeated
        external_id pays nothing for the check, and the rows before the first repeat keep
        consecutive ids, which name their place in the file."""
        from cloudgreet_billing.domain.ledger import Memo

        created_at = repeat(_adapt_time(now))
        # Imported rows share few distinct times: adapt each once, in C through the memo.
        stored_time = Memo(_adapt_time, limit=STORED_TIMES_KEPT).__getitem__
        step = ROWS_PER_INSERT * PARAMS_PER_ROW
        first_new_id = self._last_ledger_id() + 1
        plan = _Plan(first_new_id=first_new_id, last_direct_id=first_new_id - 1)
        with self._bulk_load(expected_rows, first, first_new_id) as load:
            for batch in chain([first], pending):
                columns = list(batch.columns())
                columns[4] = list(map(stored_time, batch.occurred_at))
                # zip stops at the shortest column: created_at repeats without end.
                params = list(chain.from_iterable(zip(*columns, created_at, strict=False)))
                for start in range(0, len(params), step):
                    chunk = params[start : start + step]
                    self._import_rows(chunk, len(chunk) // PARAMS_PER_ROW, load, plan)
            if plan.staged_from is not None:
                plan.inserted += self._insert_staged()
                self._raise_on_conflicts(self._staged_conflicts(plan))
                self._conn.execute(f"DROP TABLE {STAGING}")
        inserted = plan.inserted - load.repeated
        return ImportOutcome(inserted=inserted, duplicates=plan.seen - inserted)

    def _import_rows(self, chunk: list[Any], rows: int, load: _Load, plan: _Plan) -> None:
        if plan.staged_from is None:
            inserted = self._conn.execute(_insert_rows(rows, load.keyed), chunk).rowcount
            if inserted == rows:
                plan.inserted += rows
                plan.last_direct_id += rows
                plan.seen += rows
                return
            # A row repeats an external_id: from this statement on, rows are staged.
            self._conn.execute(
                "DELETE FROM billing_usage_ledger WHERE id > ?", (plan.last_direct_id,)
            )
            self._conn.execute(f"DROP TABLE IF EXISTS {STAGING}")
            self._conn.execute(
                f"CREATE TEMP TABLE {STAGING.removeprefix('temp.')} "
                f"(seq INTEGER PRIMARY KEY, {STORED_COLUMNS})"
            )
            plan.staged_from = plan.seen + 1
        self._conn.execute(_stage_rows(rows), chunk)
        plan.seen += rows

    def _insert_staged(self) -> int:
        # WHERE true: without a WHERE, SQLite would read ON CONFLICT as the SELECT's join.
        return int(
            self._conn.execute(
                f"INSERT INTO billing_usage_ledger ({STORED_COLUMNS}) "
                f"SELECT {STORED_COLUMNS} FROM {STAGING} WHERE true ORDER BY seq "
                "ON CONFLICT (external_id) DO NOTHING"
            ).rowcount
        )

    def _staged_conflicts(self, plan: _Plan) -> tuple[list[ExternalIdConflict], int]:
        """Staged rows whose external_id the ledger holds with other facts. Every first
        use of an id is in the ledger by now, so one join finds both kinds: a reuse of a
        recorded entry's id, and of an id earlier in this import."""
        query = (
            f"SELECT given.seq, recorded.id, {CONFLICT_COLUMNS} FROM {STAGING} AS given "
            "JOIN billing_usage_ledger AS recorded ON recorded.external_id = given.external_id "
            f"WHERE NOT ({same_facts('IS')})"
        )
        rows = self._conn.execute(
            f"{query} ORDER BY given.seq LIMIT {MAX_LISTED_CONFLICTS}"
        ).fetchall()
        if not rows:
            return [], 0
        # Where the ledger's version came from this import's staged rows: their first
        # row with the id.
        from_staging = [row[-1] for row in rows if row[1] > plan.last_direct_id]
        first_staged: dict[str, int] = {}
        if from_staging:
            marks = ", ".join("?" * len(from_staging))
            first_staged = dict(
                self._conn.execute(
                    f"SELECT external_id, min(seq) FROM {STAGING} "
                    f"WHERE external_id IN ({marks}) GROUP BY external_id",
                    from_staging,
                ).fetchall()
            )
        offset = plan.staged_from - 1 if plan.staged_from is not None else 0
        conflicts = []
        for row in rows:
            entry_id = int(row[1])
            if entry_id < plan.first_new_id:
                recorded_row = None
            elif entry_id <= plan.last_direct_id:
                recorded_row = entry_id - plan.first_new_id + 1
            else:
                recorded_row = offset + int(first_staged[row[-1]])
            conflicts.append(
                self._conflict(
                    row,
                    given_row=offset + int(row[0]),
                    recorded_row=recorded_row,
                    entry_id=entry_id,
                )
            )
        return conflicts, self._conflict_count(query, (), len(conflicts))

    def _raise_on_conflicts(self, found: tuple[list[ExternalIdConflict], int]) -> None:
        conflicts, count = found
        if conflicts:
            raise ExternalIdConflicts(conflicts, count)

    def _is_bulk_load(self, expected_rows: int | None) -> bool:
        if expected_rows is None or expected_rows < BULK_LOAD_MIN_ROWS:
            return False
        return not self._last_ledger_id() > 4 * expected_rows

    def _last_ledger_id(self) -> int:
        row = self._conn.execute("SELECT coalesce(max(id), 0) FROM billing_usage_ledger")
        return int(row.fetchone()[0])

    @contextmanager
    def _bulk_load(
        self, expected_rows: int | None, first: LedgerBatch, first_new_id: int
    ) -> Iterator[_Load]:
        """Inside the import transaction, for a load large for the table: drop the ledger's
        indexes, usually the ``external_id`` key included, and sort-build them again once
        every row is in; skip the ledger's CHECK constraints; keep the page cache small.

        - A sorted build costs a fraction of a million random b-tree inserts; for the key
          that matters most when external ids are random (UUIDs).
        - Without the key, rows go in unchecked for duplicates; ``_build_external_key``
          then refuses the load if a row reuses an id with other facts, and otherwise
          deletes the rows that repeat an id, keeping the first, which is what
          ``ON CONFLICT DO NOTHING`` keeps.
        - An import whose first batch is already recorded is taken for a file imported
          again, and is no bulk load: its rows are mostly duplicates, which leave every
          index as it is (measured on a million UUIDs: 6.8 s and 85 MB, against 8.0 s and
          153 MB dropping and rebuilding the other indexes).
        - Every row has passed ``domain.ledger``'s validation, whose rules the CHECKs
          restate (a test holds them together); evaluating them again cost about as much
          as inserting the row.
        - Appending needs few pages cached, and each of the sorter's threads buffers up to
          the cache's size, so a small cache keeps the import within its memory budget.

        If the load fails, the transaction's rollback brings the indexes back.
        """
        if not self._is_bulk_load(expected_rows) or self._any_recorded(first.external_id):
            yield _Load(keyed=True)
            return
        (cache_size,) = self._conn.execute("PRAGMA cache_size").fetchone()
        indexes = dict(
            self._conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'billing_usage_ledger' AND sql IS NOT NULL"
            ).fetchall()
        )
        for name in indexes:
            self._conn.execute(f'DROP INDEX "{name}"')
        # Before migration 2 the key is the column's UNIQUE, which cannot be dropped.
        key = indexes.pop(EXTERNAL_KEY, None)
        load = _Load(keyed=key is None)
        self._conn.execute(f"PRAGMA cache_size = {BULK_CACHE_SIZE}")
        self._conn.execute("PRAGMA ignore_check_constraints = ON")
        try:
            yield load
            self._conn.execute(f"PRAGMA threads = {SORT_THREADS}")
            if key is not None:
                load.repeated = self._build_external_key(key, first_new_id)
            for sql in indexes.values():
                self._conn.execute(sql)
        finally:
            self._conn.execute("PRAGMA ignore_check_constraints = OFF")
            self._conn.execute("PRAGMA threads = 0")
            self._conn.execute(f"PRAGMA cache_size = {int(cache_size)}")

    def _any_recorded(self, external_ids: Sequence[str | None]) -> bool:
        probe = [each for each in external_ids[:PROBE_IDS] if each is not None]
        if not probe:
            return False
        marks = ", ".join("?" * len(probe))
        return (
            self._conn.execute(
                f"SELECT 1 FROM billing_usage_ledger WHERE external_id IN ({marks}) LIMIT 1",
                probe,
            ).fetchone()
            is not None
        )

    def _build_external_key(self, key_sql: str, first_new_id: int) -> int:
        """Build the ``external_id`` key after a load without it. If the load repeated
        an id, recorded before or earlier in the load, refuse it if any repeat has other
        facts, else delete each later row first; how many is returned. The common case,
        no repeats, costs one sorted build."""
        try:
            self._conn.execute(key_sql)
            return 0
        except sqlite3.IntegrityError:
            pass
        self._conn.execute(f"CREATE INDEX {SCRATCH_INDEX} ON billing_usage_ledger (external_id)")
        self._raise_on_conflicts(self._loaded_conflicts(first_new_id))
        repeated = self._conn.execute(
            "DELETE FROM billing_usage_ledger WHERE id >= ? AND external_id IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM billing_usage_ledger AS earlier "
            "WHERE earlier.external_id = billing_usage_ledger.external_id "
            "AND earlier.id < billing_usage_ledger.id)",
            (first_new_id,),
        ).rowcount
        self._conn.execute(f"DROP INDEX {SCRATCH_INDEX}")
        self._conn.execute(key_sql)
        return int(repeated)

    def _loaded_conflicts(self, first_new_id: int) -> tuple[list[ExternalIdConflict], int]:
        """Rows of a bulk load (ids from ``first_new_id``, in file order) that reuse an
        external_id, recorded before or earlier in the load, with other facts."""
        query = (
            f"SELECT given.id, recorded.id, {CONFLICT_COLUMNS} "
            "FROM billing_usage_ledger AS given JOIN billing_usage_ledger AS recorded "
            "ON recorded.id = (SELECT min(id) FROM billing_usage_ledger AS earlier "
            "WHERE earlier.external_id = given.external_id) "
            f"WHERE given.id >= ? AND given.external_id IS NOT NULL "
            f"AND recorded.id < given.id AND NOT ({same_facts('IS')})"
        )
        rows = self._conn.execute(
            f"{query} ORDER BY given.id LIMIT {MAX_LISTED_CONFLICTS}", (first_new_id,)
        ).fetchall()
        conflicts = []
        for row in rows:
            entry_id = int(row[1])
            conflicts.append(
                self._conflict(
                    row,
                    given_row=int(row[0]) - first_new_id + 1,
                    recorded_row=entry_id - first_new_id + 1 if entry_id >= first_new_id else None,
                    entry_id=entry_id,
                )
            )
        return conflicts, self._conflict_count(query, (first_new_id,), len(conflicts))


@dataclass(slots=True)
class _Load:
    """How an import's rows go in: ``keyed``, through the ``external_id`` key (ON CONFLICT
    DO NOTHING), or not; and how many rows building the key afterwards found repeated."""

    keyed: bool
    repeated: int = 0


@dataclass(slots=True)
class _Plan:
    """Where an import stands: rows seen and inserted, the ids its direct inserts took
    (consecutive, from ``first_new_id`` to ``last_direct_id``), and the row from which the
    rest is staged (None while nothing is)."""

    first_new_id: int
    last_direct_id: int
    seen: int = 0
    inserted: int = 0
    staged_from: int | None = None


class _DryRun(Exception):
    """Rolls a dry run's import back, carrying what it would have done."""

    def __init__(self, outcome: ImportOutcome) -> None:
        super().__init__("dry run")
        self.outcome = outcome


@lru_cache(maxsize=2 * ROWS_PER_INSERT)
def _insert_rows(count: int, keyed: bool) -> str:
    """``INSERT_LEDGER`` for ``count`` rows in one statement; unless ``keyed``, without
    its ``ON CONFLICT`` clause (which needs the key the bulk load drops)."""
    head, values, tail = INSERT_LEDGER.partition(LEDGER_VALUES)
    return f"{head}{', '.join([values] * count)}{tail if keyed else ''}"


@lru_cache(maxsize=ROWS_PER_INSERT)
def _stage_rows(count: int) -> str:
    """``count`` rows into the import's staging table, in the ledger's columns."""
    values = ", ".join([LEDGER_VALUES] * count)
    return f"INSERT INTO {STAGING} ({STORED_COLUMNS}) VALUES {values}"


def _statements(script: str) -> Iterator[str]:
    """Split a DDL script (no triggers, no semicolons in literals) into statements."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    for statement in "\n".join(lines).split(";"):
        if statement.strip():
            yield statement


def _major_cell(amount: str, places: int) -> tuple[str, list[str]]:
    """``domain.money.to_major_string`` for a currency with this many decimals, as ``printf``
    conversions and their arguments (integer arithmetic, so exact)."""
    if places == 0:
        return "%d", [amount]
    unit = 10**places
    sign = f"(CASE WHEN {amount} < 0 THEN '-' ELSE '' END)"
    return f"%s%d.%0{places}d", [sign, f"abs({amount}) / {unit}", f"abs({amount}) % {unit}"]
