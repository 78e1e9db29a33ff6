"""PostgREST's answers as the contract's one-line errors, with the fix.

PostgREST reports a failure as JSON with ``code``, ``message``, ``details`` and ``hint``
(https://docs.postgrest.org/en/v12/references/errors.html); postgrest-py raises it as
``postgrest.exceptions.APIError``. The codes that mean something to an operator:

- ``PGRST301`` (and 302/303): the JWT is bad, missing or expired — the key is wrong;
- ``PGRST202``: no such function — migration 0007 was not applied;
- ``PGRST205`` or ``42P01``: no such table — the schema is not installed;
- ``42501``: the role may not do this — a publishable/anon key, or revoked grants;
- ``PGRST003``: the pool timed out, ``PGRST000``/``PGRST001``: the database is down;
  both are worth retrying (exit 75), as are HTTP 5xx from the gateway;
- ``23xxx`` and ``22xxx``: the data broke a constraint or a type: the caller's fault.

The API gateway (Kong) answers a missing or invalid ``apikey`` itself, with a ``message``
and no ``code`` (https://supabase.com/docs/guides/api/api-keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudgreet_billing.errors import BillingError, ConfigError, StoreError, Unavailable

#: The migration that defines the API functions.
API_MIGRATION = "0007_supabase_api.sql"
MIGRATE_HINT = "run: cloudgreet-billing db migrate --print-sql, and apply it in the SQL editor"
KEY_HINT = "use the service_role or secret key from Project Settings → API Keys"

_RETRYABLE_PGRST = {"PGRST000", "PGRST001", "PGRST002", "PGRST003"}


def _field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    return value.strip() if isinstance(value, str) else ""


class DataRefused(StoreError):
    """The database refused the data (a constraint or a type): the caller's fault, which
    no retry cures. ``sqlstate`` says which (``23505`` for a repeated key)."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.code = "store_refused"
        self.details = {"sqlstate": sqlstate}
        self.sqlstate = sqlstate


class MissingFunction(StoreError):
    """PostgREST has no such function (PGRST202): migration 0007 is not applied, or was
    applied by an older release that had fewer functions."""


def api_failure(location: str, body: Mapping[str, Any], status: int | None) -> BillingError:
    """The contract error for PostgREST's error ``body`` (HTTP ``status`` when known)."""
    code = _field(body, "code")
    message = _field(body, "message") or "no message"
    where = f"Supabase ({location})"
    if code in {"PGRST301", "PGRST302", "PGRST303"} or (not code and status == 401):
        return ConfigError(f"{where} refused the key: {message}", hint=KEY_HINT)
    if code == "PGRST202":
        return MissingFunction(
            f"{where} has no billing API function ({message}): migration {API_MIGRATION} "
            "is not applied",
            hint=MIGRATE_HINT,
        )
    if code in {"PGRST205", "42P01"}:
        return StoreError(
            f"{where} has no billing tables ({message}): the schema is not installed",
            hint=MIGRATE_HINT,
        )
    if code == "42501":
        return ConfigError(f"{where} denied the billing API: {message}", hint=KEY_HINT)
    gateway_fault = status is not None and status >= 500 and not code[:2].isdigit()
    if code in _RETRYABLE_PGRST or gateway_fault:
        return Unavailable(
            f"{where} is unavailable: {message}",
            hint="retry later; check the project's status in the Supabase dashboard",
            code="store_unavailable",
        )
    if code[:2] in {"22", "23"}:
        return DataRefused(f"{where} refused the data: {message}", code)
    if code in {"40001", "40P01", "55P03", "57014"} or code[:2] in {"08", "53", "57"}:
        return Unavailable(
            f"{where} could not finish the request: {message}",
            hint="retry later",
            code="store_unavailable",
        )
    return StoreError(f"{where} failed: {code or status} {message}".replace("  ", " "))
