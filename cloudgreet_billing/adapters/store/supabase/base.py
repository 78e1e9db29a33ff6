"""What every area of the Supabase store shares: the API, the schema, shared settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudgreet_billing.adapters.store.migrations import TABLES
from cloudgreet_billing.adapters.store.supabase.client import SupabaseApi
from cloudgreet_billing.adapters.store.supabase.errors import MIGRATE_HINT
from cloudgreet_billing.errors import BillingError, StoreError


def iso(moment: datetime | None) -> str | None:
    """A time as the functions take it: ISO 8601 with its offset (always UTC here)."""
    return None if moment is None else moment.isoformat()


def parse_time(value: str | None) -> datetime | None:
    """A ``timestamptz`` as PostgREST's JSON writes it (``2026-03-03T10:00:00+00:00``)."""
    return None if value is None else datetime.fromisoformat(value)


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
        raise StoreError(
            "the Supabase REST API cannot change the schema",
            hint=MIGRATE_HINT,
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
