"""``db migrate | status``: the schema and what the store holds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, json_mode
from cloudgreet_billing.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.adapters.store.migrations import MigrateByHand
    from cloudgreet_billing.adapters.store.protocol import Store

app = typer.Typer(
    help="Create, upgrade and inspect the billing schema.\n\nExample: cloudgreet-billing db status",
    no_args_is_help=True,
)


PrintSqlFlag = Annotated[
    bool,
    typer.Option(
        "--print-sql",
        help="Print every migration, in order, as one script for the Supabase SQL editor or "
        "psql; opens no store.",
    ),
]
SupabaseCliDir = Annotated[
    Path | None,
    typer.Option(
        "--supabase-cli-dir",
        metavar="DIR",
        help="Write every migration into DIR (a Supabase CLI project's supabase/migrations) "
        "under names that sort in version order, for supabase db push; opens no store.",
        file_okay=False,
    ),
]


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    print_sql: PrintSqlFlag = False,
    supabase_cli_dir: SupabaseCliDir = None,
    json_output: JsonFlag = False,
) -> None:
    """Create or upgrade the schema (idempotent; safe while other workers run).

    The Supabase REST store cannot run DDL: there it lists the migrations the project
    still needs, in order, with the two routes that apply them, and exits 4.

    Example: cloudgreet-billing db migrate --print-sql > billing-schema.sql
    """
    if print_sql or supabase_cli_dir is not None:
        _write_migrations(print_sql, supabase_cli_dir)
        return
    from cloudgreet_billing.adapters.store.migrations import MigrateByHand

    store = app_context(ctx).store(check_schema=False, expect_new=True)
    try:
        applied = store.migrate()
    except MigrateByHand as refusal:
        _migrate_by_hand(store, refusal)
        return
    version = store.schema_version()

    def human(console: Console) -> None:
        if applied:
            console.print(
                f"applied {'migration' if len(applied) == 1 else 'migrations'} "
                f"{', '.join(map(str, applied))}; "
                f"schema is at version {version}"
            )
        else:
            console.print(f"schema is up to date (version {version})")

    emit(
        {
            "backend": store.backend,
            "location": store.location,
            "applied": applied,
            "schema_version": version,
        },
        human,
    )


#: The two ways to run DDL on a project reached only through its REST API.
SQL_EDITOR_ROUTE = (
    "cloudgreet-billing db migrate --print-sql > billing-schema.sql, then paste it into the "
    "Supabase dashboard's SQL Editor and run it whole"
)
SUPABASE_CLI_ROUTE = (
    "cloudgreet-billing db migrate --supabase-cli-dir supabase/migrations, then "
    "supabase db push --include-all from the linked project"
)


def _migrate_by_hand(store: Store, refusal: MigrateByHand) -> None:
    """What a store that cannot run DDL needs applied, in order, and how; exit 4 (a human
    must apply it). A current schema never gets here: its migrate has nothing to do."""
    from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
    from cloudgreet_billing.domain.words import plural

    version, pending, missing = refusal.version, refusal.pending, refusal.missing_functions

    def human(console: Console) -> None:
        state = "not installed" if version is None else f"at version {version}"
        if missing:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            state += f" but lacks {plural(len(missing), 'API function')} of this release ({shown})"
        console.print(
            f"{refusal.message}: {store.location} has the schema {state}, this toolkit needs "
            f"{LATEST_SCHEMA_VERSION}; apply these files in this order (each is safe to run "
            "again):",
            soft_wrap=True,
        )
        for migration in pending:
            console.print(f"  {migration.version}  {migration.path}", soft_wrap=True)
        console.print(f"SQL editor: {SQL_EDITOR_ROUTE}", soft_wrap=True)
        console.print(f"Supabase CLI: {SUPABASE_CLI_ROUTE}", soft_wrap=True)

    emit(
        {
            "backend": store.backend,
            "location": store.location,
            "applied": [],
            "schema_version": version,
            "pending": [
                {"version": m.version, "file": m.path.name, "path": str(m.path)} for m in pending
            ],
            "missing_functions": list(missing),
            "routes": {"sql_editor": SQL_EDITOR_ROUTE, "supabase_cli": SUPABASE_CLI_ROUTE},
        },
        human,
    )
    raise typer.Exit(ExitCode.NEEDS_ATTENTION)


def _write_migrations(print_sql: bool, supabase_cli_dir: Path | None) -> None:
    """``--print-sql`` and ``--supabase-cli-dir``: the files, in version order, without a
    store (the point is a project this machine cannot change)."""
    import io

    from cloudgreet_billing.adapters.store.migrations import (
        postgres_migrations,
        write_sql_for_pasting,
        write_supabase_cli_migrations,
    )

    migrations = postgres_migrations()
    written = [] if supabase_cli_dir is None else write_supabase_cli_migrations(supabase_cli_dir)
    script = io.StringIO()
    if print_sql:
        write_sql_for_pasting(script, migrations)
    if json_mode():
        emit(
            {
                "migrations": [
                    {"version": m.version, "file": m.path.name, "path": str(m.path)}
                    for m in migrations
                ],
                "written": [str(path) for path in written],
                "sql": script.getvalue() if print_sql else None,
            }
        )
        return
    if print_sql:
        sys.stdout.write(script.getvalue())
    if written:
        # The script may be on stdout: what was written is a message, on stderr.
        for path in written:
            sys.stderr.write(f"wrote {path}\n")
        sys.stderr.write("next: supabase db push --include-all, from the linked project\n")


@app.command("status")
def status(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Backend, location, schema version and row counts per table.

    Example: cloudgreet-billing db status
    """
    from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION

    store = app_context(ctx).store(check_schema=False)
    version = store.schema_version()
    counts = store.row_counts() if version is not None else {}

    def human(console: Console) -> None:
        from cloudgreet_billing.cli.table import Column, print_table

        console.print(f"backend: {store.backend}")
        console.print(f"location: {store.location}")
        state = (
            "not installed (run: cloudgreet-billing db migrate)"
            if version is None
            else (
                f"{version}"
                + (
                    ""
                    if version >= LATEST_SCHEMA_VERSION
                    else f" (needs {LATEST_SCHEMA_VERSION}: run db migrate)"
                )
            )
        )
        console.print(f"schema version: {state}")
        if counts:
            print_table(
                [Column("table", "id"), Column("rows", "number")],
                [[name, rows] for name, rows in counts.items()],
                console=console,
            )

    emit(
        {
            "backend": store.backend,
            "location": store.location,
            "schema_version": version,
            "latest_schema_version": LATEST_SCHEMA_VERSION,
            "tables": counts,
        },
        human,
    )
