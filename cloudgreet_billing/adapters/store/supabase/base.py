"""What every area of the Supabase store shares: the API, the schema, shared settings."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudgreet_billing.adapters.store.migrations import (
    TABLES,
    MigrateByHand,
    migrations_dir,
    pending_migrations,
    postgres_migrations,
)
from cloudgreet_billing.adapters.store.supabase.client import SupabaseApi
from cloudgreet_billing.adapters.store.supabase.errors import (
    API_MIGRATION,
    MIGRATE_HINT,
    MissingFunction,
)
from cloudgreet_billing.errors import BillingError, StoreError


def iso(moment: datetime | None) -> str | None:
    """A time as the functions take it: ISO 8601 with its offset (always UTC here)."""
    return None if moment is None else moment.isoformat()


def utc_time(value: str | None) -> datetime | None:
    """A ``timestamptz`` as the functions' JSON writes it (``to_jsonb``: ISO 8601 in the
    session's time zone, UTC on Supabase unless a project changes it), in UTC as the SQL
    stores return times; None for SQL NULL. The one reader of times for every area."""
    return None if value is None else utc(value)


def utc(value: str) -> datetime:
    """``utc_time`` for a column that is never NULL."""
    return datetime.fromisoformat(value).astimezone(UTC)


_DEFINED_FUNCTION = re.compile(r"^CREATE OR REPLACE FUNCTION (billing_api_\w+)\(", re.M)


def api_functions() -> list[str]:
    """Every function migration 0007 defines: what this release calls."""
    text = (migrations_dir() / API_MIGRATION).read_text(encoding="utf-8")
    return sorted(set(_DEFINED_FUNCTION.findall(text)))


@dataclass(frozen=True)
class ApiHealth:
    """What ``doctor`` shows of the project's billing API."""

    schema_version: int | None
    #: Functions of this release's migration 0007 that the project lacks.
    missing_functions: tuple[str, ...]
    functions: int
    #: One request's round trip, milliseconds (the health call itself).
    round_trip_ms: float


class SupabaseBase:
    """The API handle and the operations outside any area."""

    backend = "supabase"
    #: A REST store never creates its database.
    created = False
    _api: SupabaseApi
    location: str

    def close(self) -> None:
        # The client is the process's (client.api_for): other stores may share it.
        pass

    def explain_failure(self, exc: BaseException) -> BillingError | None:
        return exc if isinstance(exc, BillingError) else None

    def check_writable(self) -> None:
        self._api.rpc("billing_api_check_writable")

    # --- schema -------------------------------------------------------------
    def schema_version(self) -> int | None:
        """Read from the table itself, not through a function, so that a project whose
        schema predates the API functions (version 7) still says which version it has."""
        try:
            rows = self._api.select("billing_schema_version", "version")
        except StoreError as exc:
            if "schema is not installed" in exc.message:
                return None
            raise
        versions = [int(row["version"]) for row in rows]
        return max(versions) if versions else None

    def migrate(self) -> list[int]:
        """Nothing to do (``[]``) when the schema and its functions are current, as on the
        other stores; otherwise refused, with what the project still needs
        (``MigrateByHand``), since REST cannot run DDL."""
        version = self.schema_version()
        pending = pending_migrations(version)
        missing: tuple[str, ...] = ()
        if not pending:
            try:
                missing = self.api_health().missing_functions
            except MissingFunction:
                # billing_api_health itself is missing: an older release's 0007.
                missing = tuple(api_functions())
            if missing:
                every = postgres_migrations()
                api = next(m.version for m in every if m.path.name == API_MIGRATION)
                pending = [m for m in every if m.version >= api]
        if not pending:
            return []
        raise MigrateByHand(
            "the Supabase REST API cannot change the schema",
            hint=MIGRATE_HINT,
            version=version,
            pending=pending,
            missing_functions=missing,
        )

    def api_health(self) -> ApiHealth:
        """The schema version and the API functions present, timed as one request."""
        started = time.perf_counter()
        found = self._api.rpc("billing_api_health") or {}
        elapsed = (time.perf_counter() - started) * 1000
        present = set(found.get("functions") or [])
        version = found.get("schema_version")
        return ApiHealth(
            schema_version=None if version is None else int(version),
            missing_functions=tuple(name for name in api_functions() if name not in present),
            functions=len(present),
            round_trip_ms=elapsed,
        )

    def row_counts(self) -> dict[str, int]:
        counts = self._api.rpc("billing_api_row_counts") or {}
        return {table: int(counts.get(table, 0)) for table in TABLES}

    # --- shared settings ----------------------------------------------------
    def get_setting(self, key: str) -> Any | None:
        found = self._api.rpc("billing_api_get_setting", {"p_key": key})
        return None if found is None else found["value"]

    def put_setting(self, key: str, value: Any, actor: str, now: datetime) -> None:
        self._api.rpc(
            "billing_api_put_setting",
            {"p_key": key, "p_value": value, "p_actor": actor, "p_now": iso(now)},
        )
