"""PostgreSQL through psycopg 3: any Postgres, including Supabase's direct and pooler URLs."""

from __future__ import annotations

import codecs
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
from psycopg.types.json import Jsonb

from cloudgreet_billing.adapters.store.migrations import postgres_migrations
from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome
from cloudgreet_billing.adapters.store.sql import SqlStore
from cloudgreet_billing.adapters.store.sql_finance import STREAM_BATCH
from cloudgreet_billing.adapters.store.sql_ledger import (
    CONFLICT_COLUMNS,
    LEDGER_COLUMNS,
    same_facts,
)
from cloudgreet_billing.config import redact_url
from cloudgreet_billing.domain.ledger_identity import (
    IDENTITY_COLUMNS,
    MAX_LISTED_CONFLICTS,
    ExternalIdConflict,
    ExternalIdConflicts,
)
from cloudgreet_billing.errors import BillingError, ConfigError, StoreError, Unavailable

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.sql_base import Cursor
    from cloudgreet_billing.domain.ledger_batch import LedgerBatch
    from cloudgreet_billing.domain.reconciliation import Window

# Any 64-bit number, fixed, so every worker serialises on the same migration lock.
MIGRATION_LOCK = 0x0C10_D6EE_7B11
#: Bytes of COPY output gathered before handing them on.
COPY_CHUNK = 64 * 1024


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@lru_cache(maxsize=512)
def _placeholders(query: str) -> str:
    """Our queries use ``?``; psycopg wants ``%s`` (and a literal ``%`` doubled)."""
    return query.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlStore):
    backend = "postgres"

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        self.location = redact_url(url)
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 5432}"
        try:
            # prepare_threshold=None: Supabase's transaction pooler (PgBouncer) cannot keep
            # prepared statements across transactions.
            self._conn = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=connect_timeout,
                prepare_threshold=None,
                application_name="cloudgreet-billing",
            )
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "refused"
            if "password authentication failed" in reason or "does not exist" in reason:
                raise StoreError(
                    f"PostgreSQL at {where} refused the connection: {reason}",
                    hint="check the user, password and database name in BILLING_DATABASE_URL",
                ) from None
            raise Unavailable(
                f"cannot reach PostgreSQL at {where}: {reason}",
                hint="check the server is up and BILLING_DATABASE_URL is right; retry later",
                code="store_unavailable",
            ) from None
        except psycopg.Error:
            # libpq's parser quotes the offending token, which may be the password: say
            # what is wrong without repeating any of the URL.
            raise ConfigError(
                "BILLING_DATABASE_URL is not a valid PostgreSQL connection URL",
                hint="percent-encode special characters in the user and password "
                "(% as %25, @ as %40, : as %3A)",
            ) from None

    def close(self) -> None:
        self._conn.close()

    def _execute(self, query: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(_placeholders(query), params)  # type: ignore[return-value]

    def _store_fault(self, exc: BaseException) -> bool:
        # By SQLSTATE class, as psycopg maps them: 22 (data exception: out of range, bad
        # text) and 23 (integrity: CHECK, NOT NULL, unique) are the data's fault, and so is
        # 54 (program limit: a value too large or too deep for the server), which psycopg
        # files under OperationalError. Everything else (08 connection, 40 serialization
        # failure and deadlock, 55P03 lock timeout, 57 canceled or shutting down, 53 out of
        # resources, 42 privileges or schema) is the store's: a retry, or a fix of the
        # store, cures it.
        # PipelineAborted only says that an earlier statement of the pipeline failed: the
        # batch is redone event by event, where that statement's own error is judged.
        if isinstance(exc, psycopg.errors.ProgramLimitExceeded | psycopg.errors.PipelineAborted):
            return False
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
            return False
        return isinstance(exc, psycopg.Error)

    def explain_failure(self, exc: BaseException) -> BillingError | None:
        errors = psycopg.errors
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return StoreError(
                f"the PostgreSQL store {self.location} is read-only: {_first_line(exc)}",
                hint="point BILLING_DATABASE_URL at the primary, not a replica, and check "
                "default_transaction_read_only for this role and database",
                code="store_read_only",
            )
        if isinstance(exc, errors.InsufficientPrivilege):
            return StoreError(
                f"the PostgreSQL role may not do this in {self.location}: {_first_line(exc)}",
                hint="connect as the tables' owner or the service role, or GRANT the "
                "billing tables to this role",
                code="store_read_only",
            )
        if isinstance(exc, errors.LockNotAvailable):
            return Unavailable(
                f"another process holds the store {self.location}; retry",
                hint="a long import or migration may be running; retry when it is done",
                code="store_unavailable",
            )
        return None

    def _executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> int:
        with self._conn.cursor() as cursor:
            cursor.executemany(_placeholders(query), rows)
            return cursor.rowcount

    def _json_param(self, value: Any) -> Any:
        return Jsonb(value)

    @staticmethod
    def _json_value(value: Any) -> Any:
        # psycopg already decodes jsonb; a str here is a JSON string value, not JSON text.
        return value

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def _table_exists(self, table: str) -> bool:
        row = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])

    def migrate(self) -> list[int]:
        applied: list[int] = []
        # A session lock, so that two workers migrating at once apply each file once.
        self._conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            current = self.schema_version() or 0
            for migration in postgres_migrations():
                if migration.version <= current:
                    continue
                # Each file is its own transaction (BEGIN … COMMIT inside) and records
                # its version; the simple query protocol runs it as psql would.
                self._conn.execute(migration.path.read_text(encoding="utf-8").encode())
                applied.append(migration.version)
        except psycopg.Error as exc:
            raise StoreError(f"migration failed: {exc}".strip()) from exc
        finally:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        return applied

    def import_ledger(
        self,
        batches: Iterable[LedgerBatch],
        now: datetime,
        *,
        expected_rows: int | None = None,
        dry_run: bool = False,
    ) -> ImportOutcome:
        """COPY into a temporary table, then one INSERT … ON CONFLICT: far faster than
        row-by-row inserts, and still a single transaction. If a row was skipped, one
        join of the staged rows with the ledger finds every reuse of an external_id with
        other facts, and the import rolls back. A dry run does all of it and rolls back."""
        with self._conn.transaction() as transaction, self._conn.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE ledger_import (seq bigint, "
                "customer_id text, kind text, amount bigint, currency text, "
                "occurred_at timestamptz, invoice_id text, description text, external_id text, "
                "created_at timestamptz) ON COMMIT DROP"
            )
            seen = 0
            with cursor.copy(f"COPY ledger_import (seq, {LEDGER_COLUMNS}) FROM STDIN") as copy:
                for batch in batches:
                    for draft in batch.drafts():
                        seen += 1
                        copy.write_row((seen, *self._ledger_params(draft, now)))
            cursor.execute("SELECT coalesce(max(id), 0) FROM billing_usage_ledger")
            row = cursor.fetchone()
            last_id_before = int(row[0]) if row else 0
            cursor.execute(
                f"INSERT INTO billing_usage_ledger ({LEDGER_COLUMNS}) "
                f"SELECT {LEDGER_COLUMNS} FROM ledger_import ORDER BY seq "
                "ON CONFLICT (external_id) DO NOTHING"
            )
            inserted = cursor.rowcount
            if inserted < seen:
                # After the insert, so that an entry another session committed meanwhile
                # (which ON CONFLICT waited for and skipped) is judged too.
                conflicts, count = self._staged_conflicts(last_id_before, now)
                if conflicts:
                    raise ExternalIdConflicts(conflicts, count)
            outcome = ImportOutcome(inserted=inserted, duplicates=seen - inserted)
            if dry_run:
                raise psycopg.Rollback(transaction)
        return outcome

    def _staged_conflicts(
        self, last_id_before: int, now: datetime
    ) -> tuple[list[ExternalIdConflict], int]:
        """Staged rows whose external_id the ledger holds with other facts: recorded
        before, or inserted just now from an earlier row of this import (an id past
        ``last_id_before`` created at ``now``, whose facts an earlier row holds: an entry
        another import recorded meanwhile, with the same clock, is named as an entry)."""
        query = (
            "SELECT given.seq, recorded.id, "
            "(recorded.id > ? AND recorded.created_at = ?) AS from_import, "
            f"{CONFLICT_COLUMNS} FROM ledger_import AS given "
            "JOIN billing_usage_ledger AS recorded ON recorded.external_id = given.external_id "
            f"WHERE NOT ({same_facts('IS NOT DISTINCT FROM')})"
        )
        params = (last_id_before, now)
        rows = self._execute(
            f"{query} ORDER BY given.seq LIMIT {MAX_LISTED_CONFLICTS}", params
        ).fetchall()
        if not rows:
            return [], 0
        lead = 3
        from_import = [int(row[0]) for row in rows if row[2]]
        earliest: dict[int, int] = {}
        if from_import:
            holds_recorded = " AND ".join(
                f"earlier.{column} IS NOT DISTINCT FROM recorded.{column}"
                for column in IDENTITY_COLUMNS
            )
            earliest = {
                int(given_seq): int(seq)
                for given_seq, seq in self._execute(
                    "SELECT given.seq, min(earlier.seq) FROM ledger_import AS given "
                    "JOIN ledger_import AS earlier ON earlier.external_id = given.external_id "
                    "AND earlier.seq < given.seq "
                    "JOIN billing_usage_ledger AS recorded "
                    "ON recorded.external_id = given.external_id "
                    f"WHERE given.seq = ANY(?) AND {holds_recorded} GROUP BY given.seq",
                    (from_import,),
                ).fetchall()
            }
        conflicts = [
            self._conflict(
                row,
                lead=lead,
                given_row=int(row[0]),
                recorded_row=earliest.get(int(row[0])) if row[2] else None,
                entry_id=int(row[1]),
            )
            for row in rows
        ]
        return conflicts, self._conflict_count(query, params, len(conflicts))

    def _lock_due_step_ids(self, now: datetime, limit: int) -> list[int]:
        """Due steps no other run holds: rows locked by a concurrent claim are skipped, not
        waited for, so runs share the work instead of queueing behind each other."""
        rows = self._conn.execute(
            "SELECT id FROM billing_dunning_events WHERE status = 'scheduled' AND due_at <= %s "
            "ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
            (now, limit),
        ).fetchall()
        return [int(row[0]) for row in rows]

    # --- finance: streaming reads and the ledger export through COPY ------------------
    def _stream(self, query: str, params: Sequence[Any] = ()) -> Iterator[Sequence[Any]]:
        """A server-side cursor: the server keeps the result, we fetch it a batch at a time."""
        with (
            self._conn.transaction(),
            self._conn.cursor(name=f"billing_stream_{uuid.uuid4().hex}") as cursor,
        ):
            cursor.execute(_placeholders(query), params)
            while rows := cursor.fetchmany(STREAM_BATCH):
                yield from rows

    def _sql_char(self, code: int) -> str:
        return f"chr({code})"

    def _sql_time_cell(self, column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

    def ledger_csv_chunks(self, window: Window) -> Iterator[tuple[str, int]]:
        """``COPY … TO STDOUT (FORMAT csv)``: the server writes the CSV. COPY sends one
        message per row; we hand them on in chunks of about 64 KiB."""
        query = self._sql_ledger_export(self._sql_ledger_cells())
        decoder = codecs.getincrementaldecoder("utf-8")()
        pending: list[bytes] = []
        size = 0
        with (
            self._conn.cursor() as cursor,
            cursor.copy(
                f"COPY ({_placeholders(query)}) TO STDOUT (FORMAT csv)",
                (window.start, window.end),
            ) as copy,
        ):
            for data in copy:
                pending.append(bytes(data))
                size += len(data)
                if size >= COPY_CHUNK:
                    yield decoder.decode(b"".join(pending)), len(pending)
                    pending.clear()
                    size = 0
        if pending:
            yield decoder.decode(b"".join(pending), final=True), len(pending)

    # --- Stripe events: a batch in pipeline mode --------------------------------------
    @contextmanager
    def _event_batch(self) -> Iterator[None]:
        """The batch's transaction in pipeline mode, with prepared statements.

        Pipeline mode sends statements without waiting for their answers; the server is
        waited for only where an answer is read (``MirrorSql.apply_event_plans`` reads only
        what decides the next step). An error surfaces at the next read or at COMMIT and
        rolls the batch back whole. Prepared statements spare the server parsing the same
        few statements thousands of times; they live only inside this transaction (a
        transaction pooler may hand the next one to another server connection), so they
        are deallocated before it ends, also after an error: the savepoint keeps the
        transaction usable for that.
        """
        self._conn.prepare_threshold = 0
        try:
            with self._conn.pipeline(), self._conn.transaction():
                try:
                    with self._conn.transaction():
                        yield
                finally:
                    self._conn.execute("DEALLOCATE ALL")
        finally:
            self._conn.prepare_threshold = None

    def _answer_later(self, cursor: Cursor) -> Cursor:
        """Left unread: reading it now would make the pipeline wait for the server."""
        return cursor

    def _insert_new_events(self, rows: Sequence[Sequence[Any]]) -> set[str]:
        """One array per column (``unnest``): the statement's text is the same for every
        batch, where a VALUES list would have seven parameters per event."""
        from cloudgreet_billing.adapters.store.sql_mirror import ON_NEW_EVENTS, RECORD_EVENTS

        columns = [list(column) for column in zip(*rows, strict=True)]
        head = RECORD_EVENTS.removesuffix(" VALUES")
        found = self._conn.execute(
            f"{head} SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], "
            f"%s::boolean[], %s::text[], %s::text[], %s::timestamptz[]) {ON_NEW_EVENTS}",
            columns,
        ).fetchall()
        return {row[0] for row in found}
