"""``doctor``: is this machine ready to run the playbook?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cloudgreet_billing.cli.output import JsonFlag, emit

if TYPE_CHECKING:
    from rich.console import Console

MARKS = {"ok": "✓", "not_configured": "-", "warn": "!", "fail": "✗"}


def doctor(json_output: JsonFlag = False) -> None:
    """Check configuration, store and schema, Stripe and delivery; exit 1 if any check fails.

    Example: cloudgreet-billing --env-file prod.env doctor
    """
    from cloudgreet_billing.services.doctor import run_checks

    results = run_checks()
    failed = any(result.status == "fail" for result in results)

    def human(console: Console) -> None:
        for result in results:
            label = result.status.replace("_", " ")
            console.print(f"{MARKS[result.status]} {result.name}: {label} — {result.detail}")

    emit(
        {
            "ok": not failed,
            "checks": [{"name": r.name, "status": r.status, "detail": r.detail} for r in results],
        },
        human,
    )
    if failed:
        raise typer.Exit(1)
