"""``dunning exempt | unexempt | exemptions``: customers dunning must not remind.

Registered on the ``dunning`` group by ``cli/dunning.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.cli import params
from cloudgreet_billing.cli.actions import YesFlag, confirm_gate
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit
from cloudgreet_billing.cli.render import when
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.domain.words import plural

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.domain.exemptions import Exemption

CustomerId = Annotated[
    str,
    typer.Argument(
        help="The Stripe customer id (cus_…).", metavar="CUSTOMER_ID", callback=params.customer_id
    ),
]


def exemption_json(exemption: Exemption) -> dict[str, Any]:
    """An exemption as ``dunning exempt`` and ``dunning exemptions`` show it."""
    return {
        "customer_id": exemption.customer_id,
        "reason": exemption.reason,
        "actor": exemption.actor,
        "created_at": iso_z(exemption.created_at),
    }


def exempt(
    ctx: typer.Context,
    customer_id: CustomerId,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="Why they are not reminded (shown by dunning list and the skipped steps).",
            callback=params.text,
        ),
    ],
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Stop reminding a customer (a payment plan, a VIP) until `dunning unexempt`.

    Every run skips their due steps, with the reason; steps not yet due wait. Asks on a
    terminal, needs --yes elsewhere (exit 3). An exempt customer keeps the first reason
    and actor: without confirmation this says who exempted them and why, and exits 3;
    confirmed, it notes your reason in the audit log beside theirs.

    Example: cloudgreet-billing dunning exempt cus_QpL8HLkdIwHu7i --reason "payment plan" --yes
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning.exemptions import describe
    from cloudgreet_billing.services.dunning.exemptions import exempt as exempt_customer

    context = app_context(ctx)
    store = context.store()
    outcome = exempt_customer(
        store,
        customer_id,
        reason=reason,
        actor=context.settings.actor,
        now=utcnow(),
        safety=confirm_gate(context, yes=yes),
    )
    exemption = outcome.exemption

    def human(console: Console) -> None:
        if not outcome.created:
            console.print(
                f"{describe(exemption, already=True)}; that stays, and your reason is noted "
                "in the audit log"
            )
            return
        console.print(
            f"{exemption.customer_id} exempt from dunning by {exemption.actor}: "
            f"{exemption.reason}; due steps are skipped until: "
            f"cloudgreet-billing dunning unexempt {exemption.customer_id}"
        )

    emit({**exemption_json(exemption), "already_exempt": not outcome.created}, human)


def unexempt(
    ctx: typer.Context,
    customer_id: CustomerId,
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Remind a customer again: their steps still scheduled go out when due.

    Steps skipped while they were exempt stay skipped (`dunning requeue` sends one
    again); the next step on their timeline is sent. Asks on a terminal, needs --yes
    elsewhere (exit 3). A customer who is not exempt is told so (exit 0).

    Example: cloudgreet-billing dunning unexempt cus_QpL8HLkdIwHu7i --yes
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning.exemptions import unexempt as unexempt_customer

    context = app_context(ctx)
    outcome = unexempt_customer(
        context.store(),
        customer_id,
        actor=context.settings.actor,
        now=utcnow(),
        safety=confirm_gate(context, yes=yes),
    )
    ended = outcome.ended

    def human(console: Console) -> None:
        if ended is None:
            console.print(f"{outcome.customer_id} is not exempt; nothing changed")
            return
        soon = f", {outcome.due:,} of them at the next dunning run" if outcome.due else ""
        console.print(
            f"{outcome.customer_id} is reminded again (was exempt, by {ended.actor} at "
            f"{when(ended.created_at)}: {ended.reason}); "
            f"{plural(outcome.scheduled, 'scheduled step')} "
            f"{'goes' if outcome.scheduled == 1 else 'go'} out when due{soon}"
        )

    emit(
        {
            "customer_id": outcome.customer_id,
            "exempt": False,
            "was_exempt": ended is not None,
            "ended": None if ended is None else exemption_json(ended),
            "scheduled": outcome.scheduled,
            "due": outcome.due,
        },
        human,
    )


def exemptions(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", parser=params.limit, help="At most this many.")
    ] = 50,
    json_output: JsonFlag = False,
) -> None:
    """List the customers exempt from dunning, oldest exemption first: who and why.

    Example: cloudgreet-billing dunning exemptions
    """
    from cloudgreet_billing.cli.table import Cell, Column, left_out, print_table
    from cloudgreet_billing.services.dunning.exemptions import list_exemptions

    listing = list_exemptions(app_context(ctx).store(), limit=limit)
    left_out(len(listing.exemptions), listing.total)

    def human(console: Console) -> None:
        columns = [
            Column("customer", "id"),
            Column("since", "time"),
            Column("by", "text"),
            Column("reason", "prose", drop=1),
        ]
        rows: list[list[Cell]] = [
            [e.customer_id, e.created_at, e.actor, e.reason] for e in listing.exemptions
        ]
        print_table(columns, rows, console=console, empty="no customer is exempt from dunning")

    emit([exemption_json(e) for e in listing.exemptions], human)
