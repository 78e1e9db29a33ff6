"""A test database set up the way a hosted Supabase project's database is.

Taken from Supabase's own init script,
https://github.com/supabase/postgres/blob/develop/migrations/db/init-scripts/00000000000000-initial-schema.sql:

- roles ``anon`` and ``authenticated`` (NOLOGIN NOINHERIT), ``service_role`` (NOLOGIN
  NOINHERIT BYPASSRLS), and the login role ``authenticator`` (NOINHERIT) that PostgREST
  connects as, granted all three so it can switch to them;
- ``GRANT USAGE ON SCHEMA public`` (and ``extensions``) to the three API roles;
- **default privileges**: ``ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES,
  FUNCTIONS, SEQUENCES TO postgres, anon, authenticated, service_role``, so every object a
  migration creates is reachable by ``anon`` until the migration REVOKEs it;
- statement timeouts: ``anon`` 3 s, ``authenticated`` 8 s, and ``authenticator`` 8 s, which
  ``service_role`` inherits as the connection's setting
  (https://supabase.com/docs/guides/database/postgres/timeouts, "Role level");
- the database in UTC ("Every Supabase database is set to UTC timezone by default",
  https://supabase.com/docs/guides/database/postgres/configuration).

Roles belong to the cluster, which other test sessions share: they are created
idempotently, under an advisory lock, and never dropped.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

API_ROLES = ("anon", "authenticated", "service_role")
AUTHENTICATOR = "authenticator"
#: The authenticator's password, for servers whose pg_hba asks for one (CI's trusts).
AUTHENTICATOR_PASSWORD = "postgrest-standin"

_ROLES = {
    "anon": "NOLOGIN NOINHERIT",
    "authenticated": "NOLOGIN NOINHERIT",
    "service_role": "NOLOGIN NOINHERIT BYPASSRLS",
    AUTHENTICATOR: "LOGIN NOINHERIT",
}
_TIMEOUTS = {"anon": "3s", "authenticated": "8s", AUTHENTICATOR: "8s"}


def ensure_roles(server_url: str) -> None:
    """Create (or align) the Supabase roles on the cluster; safe under concurrency."""
    with psycopg.connect(server_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('postgrest-standin-roles'))")
        for role, attributes in _ROLES.items():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
                except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                    pass  # another session created it between our check and our CREATE
            conn.execute(sql.SQL("ALTER ROLE {} " + attributes).format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(AUTHENTICATOR), sql.Literal(AUTHENTICATOR_PASSWORD)
            )
        )
        for role in API_ROLES:
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(role), sql.Identifier(AUTHENTICATOR)
                )
            )
        for role, timeout in _TIMEOUTS.items():
            conn.execute(
                sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                    sql.Identifier(role), sql.Literal(timeout)
                )
            )


def prepare_database(database_url: str) -> None:
    """Give a fresh database the grants and default privileges of a Supabase project."""
    roles = sql.SQL(", ").join(sql.Identifier(r) for r in ("postgres", *API_ROLES))
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET timezone TO 'UTC'").format(sql.Identifier(name))
        )
        conn.execute("CREATE SCHEMA IF NOT EXISTS extensions")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(roles))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA extensions TO {}").format(roles))
        for kind in ("TABLES", "FUNCTIONS", "SEQUENCES"):
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {} TO {}").format(
                    sql.SQL(kind), roles
                )
            )


def authenticator_url(database_url: str) -> str:
    """The same database, logged in as ``authenticator`` (PostgREST's ``db-uri``)."""
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{AUTHENTICATOR}:{AUTHENTICATOR_PASSWORD}@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))
