"""``db migrate | status``: the schema and what the store holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    help="Create, upgrade and inspect the billing schema.\n\nExample: cloudgreet-billing db status",
    no_args_is_help=True,
)


@app.command("migrate")
def migrate(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Create or upgrade the schema (idempotent; safe while other workers run).

    Example: cloudgreet-billing db migrate
    """
    store = app_context(ctx).store(check_schema=False, expect_new=True)
    applied = store.migrate()
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
