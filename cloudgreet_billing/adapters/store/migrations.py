"""Where the schema lives and which version is current.

PostgreSQL/Supabase: ``migrations/CREATE_BILLING_INFRASTRUCTURE.sql`` is version 1; later
changes are ``migrations/NNNN_name.sql`` (version NNNN). The wheel ships the folder inside
the package. SQLite keeps its equivalent DDL beside its adapter: ``sqlite_schema.sql``,
then ``sqlite_NNNN_name.sql``. Every version exists on both backends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BASE_MIGRATION = "CREATE_BILLING_INFRASTRUCTURE.sql"
_NUMBERED = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")

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
)


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
    folder = migrations_dir()
    found = [Migration(1, BASE_MIGRATION.removesuffix(".sql"), folder / BASE_MIGRATION)]
    for path in sorted(folder.glob("*.sql")):
        match = _NUMBERED.fullmatch(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path))
    return found


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
LATEST_SCHEMA_VERSION = 4
