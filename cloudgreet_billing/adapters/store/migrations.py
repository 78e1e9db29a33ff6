"""Where the schema lives and which version is current.

PostgreSQL/Supabase: ``migrations/CREATE_BILLING_INFRASTRUCTURE.sql`` is version 1; later
changes are ``migrations/NNNN_name.sql`` (version NNNN). The wheel ships the folder inside
the package. SQLite keeps its equivalent DDL beside its adapter: ``sqlite_schema.sql``,
then ``sqlite_NNNN_name.sql``. Every version exists on both backends.

The order is the version, never the file name: a glob or ``ls`` sorts ``0002_…`` before
``CREATE_BILLING_INFRASTRUCTURE.sql``, and the Supabase CLI skips the base file altogether
(its ``supabase/migrations`` files must match ``^([0-9]+)_(.*)\\.sql$``). Where no direct
connection can run the DDL (the Supabase REST store), the files are written out in order,
as one script for the SQL editor or as timestamped files for ``supabase db push``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cloudgreet_billing.adapters.files import write_file
from cloudgreet_billing.errors import StoreError

BASE_MIGRATION = "CREATE_BILLING_INFRASTRUCTURE.sql"
_NUMBERED = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_NUMBER_PREFIX = re.compile(r"^\d{4}_")

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
    "billing_quarantined_events",
    "billing_dunning_exemptions",
)
#: Tables only the Supabase REST store uses, PostgreSQL only (0007_supabase_api.sql): a
#: ledger import too large for one request waits there until one call commits it. They
#: hold no billing state, so they are not in ``TABLES``: ``db status`` counts the ledger's
#: entries, never rows staged but not yet (or never to be) committed.
STAGING_TABLES: tuple[str, ...] = ("billing_ledger_imports", "billing_ledger_import_rows")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations_dir() -> Path:
    """The SQL folder: inside an installed wheel, else the repository's ``migrations/``."""
    packaged = Path(__file__).resolve().parents[2] / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations"


def postgres_migrations() -> list[Migration]:
    """Every PostgreSQL migration in the order it must run: version 1 (the base), then the
    numbered files by version."""
    folder = migrations_dir()
    numbered = []
    for path in folder.glob("*.sql"):
        match = _NUMBERED.fullmatch(path.name)
        if match:
            numbered.append(Migration(int(match.group(1)), path.stem, path))
    numbered.sort(key=lambda m: m.version)
    seen = {1}
    for migration in numbered:
        if migration.version in seen:
            # A packaging mistake, not bad input: two files would fight over one version.
            raise RuntimeError(f"two migration files claim schema version {migration.version}")
        seen.add(migration.version)
    return [Migration(1, BASE_MIGRATION.removesuffix(".sql"), folder / BASE_MIGRATION), *numbered]


def pending_migrations(
    version: int | None, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """The migrations a schema at ``version`` (None: not installed) still needs, in order."""
    migrations = postgres_migrations() if migrations is None else migrations
    return [migration for migration in migrations if migration.version > (version or 0)]


class MigrateByHand(StoreError):
    """A store that cannot run DDL (the Supabase REST store: PostgREST runs functions and
    table statements only), with what it still needs: ``db migrate`` answers it with the
    files to apply, in order, and the routes that can apply them.

    ``pending`` is empty when the schema is current; ``missing_functions`` names the API
    functions of this release that a project at the latest version still lacks (its
    migration was applied by an older release), whose migration is then pending again.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        version: int | None = None,
        pending: Sequence[Migration] = (),
        missing_functions: Sequence[str] = (),
    ) -> None:
        super().__init__(message, hint)
        self.code = "migrate_by_hand"
        self.version = version
        self.pending = list(pending)
        self.missing_functions = tuple(missing_functions)


def write_sql_for_pasting(out: TextIO, migrations: Sequence[Migration] | None = None) -> None:
    """Write every migration, in order, as one script to paste into the SQL editor
    (Supabase dashboard → SQL Editor); what ``db migrate --print-sql`` prints.

    Each file keeps its own BEGIN/COMMIT and runs cleanly any number of times, so the
    script may be run again after a partial failure.
    """
    migrations = postgres_migrations() if migrations is None else migrations
    out.write(
        "-- cloudgreet-billing: every schema migration, in the order they must run.\n"
        "-- Paste into the Supabase SQL editor (or psql -v ON_ERROR_STOP=1) and run it whole;\n"
        "-- each file is its own transaction and is safe to run again.\n"
    )
    for position, migration in enumerate(migrations, start=1):
        out.write(
            f"\n-- ==== {position}/{len(migrations)}: {migration.path.name} "
            f"(schema version {migration.version}) ====\n\n"
        )
        text = migration.path.read_text(encoding="utf-8")
        out.write(text if text.endswith("\n") else text + "\n")


#: The version prefix the Supabase CLI files get: version N is ``20260101000000 + N``, the
#: same every time, so ``supabase db push`` recognises what it has already applied.
SUPABASE_CLI_BASE_VERSION = 20260101000000


def supabase_cli_name(migration: Migration) -> str:
    """``20260101000001_cloudgreet_billing_create_billing_infrastructure.sql``: the
    ``<timestamp>_name.sql`` form ``supabase db push`` requires, in version order."""
    name = _NUMBER_PREFIX.sub("", migration.name).lower()
    return f"{SUPABASE_CLI_BASE_VERSION + migration.version}_cloudgreet_billing_{name}.sql"


def write_supabase_cli_migrations(
    folder: Path, migrations: Sequence[Migration] | None = None
) -> list[Path]:
    """Copy the migrations into a Supabase CLI project's ``supabase/migrations`` folder
    under :func:`supabase_cli_name`; returns the paths written, in order."""
    migrations = postgres_migrations() if migrations is None else migrations
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for migration in migrations:
        target = folder / supabase_cli_name(migration)
        write_file(target, (migration.path.read_text(encoding="utf-8"),))
        written.append(target)
    return written


def sqlite_migrations() -> list[Migration]:
    """Version 1 is ``sqlite_schema.sql``; version NNNN is ``sqlite_NNNN_name.sql``, the
    equivalent of PostgreSQL's ``NNNN_name.sql``."""
    here = Path(__file__).resolve().parent
    found = [Migration(1, BASE_MIGRATION.removesuffix(".sql"), here / "sqlite_schema.sql")]
    for path in sorted(here.glob("sqlite_*.sql")):
        match = _NUMBERED.fullmatch(path.name.removeprefix("sqlite_"))
        if match:
            found.append(Migration(int(match.group(1)), path.stem.removeprefix("sqlite_"), path))
    return found


#: The schema version this code needs.
LATEST_SCHEMA_VERSION = 7
