"""``sync --verify``: the drift check's command side (see ``services.drift``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import emit, note
from cloudgreet_billing.cli.progress import progress_bar
from cloudgreet_billing.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.services.drift import VerifyReport


def run_verify(ctx: typer.Context, *, days: int | None, repair: bool) -> None:
    from cloudgreet_billing.bootstrap import open_gateway
    from cloudgreet_billing.cli.output import stripe_is_slow
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.drift import DEFAULT_VERIFY_DAYS
    from cloudgreet_billing.services import drift

    window = drift.check_days(DEFAULT_VERIFY_DAYS if days is None else days)
    context = app_context(ctx)
    gateway = open_gateway(
        context.settings,
        batch=True,
        on_slow=stripe_is_slow,
        pages_per_second=drift.PAGES_PER_SECOND,
    )
    store = context.store()
    note(f"stripe: {gateway.mode} mode")
    with progress_bar("compared") as progress:
        report = drift.verify(
            store, gateway, now=utcnow(), days=window, repair=repair, progress=progress
        )
    emit(report.as_json(), lambda console: _human(console, report))
    if report.needs_attention:
        raise typer.Exit(ExitCode.NEEDS_ATTENTION)


def _human(console: Console, report: VerifyReport) -> None:
    console.print(
        f"compared {report.invoices_checked:,} invoices (created since "
        f"{report.since:%Y-%m-%d %H:%M} UTC) and {report.subscriptions_checked:,} "
        "subscriptions with Stripe",
        highlight=False,
    )
    if not report.differences and not report.unreadable:
        console.print("the mirror matches Stripe", highlight=False)
        return
    for difference in report.differences:
        mark = " (repaired)" if difference.repaired else ""
        console.print(f"  {difference.describe()}{mark}", highlight=False, soft_wrap=True)
    for item in report.unreadable:
        console.print(
            f"  {item['object']} {item['id']}: unreadable, {item['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    left = report.objects_differing - report.repaired
    if report.repair:
        console.print(
            f"{report.objects_differing:,} objects differed, {report.repaired:,} repaired"
            + (f", {left:,} need a person" if left else ""),
            highlight=False,
        )
    else:
        console.print(
            f"{report.objects_differing:,} objects differ: "
            "run again with --repair to apply Stripe's versions",
            highlight=False,
        )
