"""``quarantine list | show | retry | dismiss``: Stripe events that could not be applied."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, note
from cloudgreet_billing.cli.render import when
from cloudgreet_billing.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.domain.events import EventResult
    from cloudgreet_billing.domain.quarantine import QuarantinedEvent

app = typer.Typer(
    help="Stripe events that could not be applied: list, show, retry or dismiss them.",
    no_args_is_help=True,
)

EventRef = Annotated[
    str,
    typer.Argument(
        help="The quarantined event's number (see `quarantine list`) or its evt_… id.",
        metavar="ID",
        show_default=False,
    ),
]


def _row_json(row: QuarantinedEvent) -> dict[str, Any]:
    from cloudgreet_billing.services.sync import quarantined_json

    return quarantined_json(row)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str,
        typer.Option("--status", help="quarantined, applied, dismissed or all."),
    ] = "quarantined",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    json_output: JsonFlag = False,
) -> None:
    """List quarantined events, oldest first (default: those still waiting)."""
    from cloudgreet_billing.cli.table import Column, left_out, print_table
    from cloudgreet_billing.services.quarantine import check_status_filter

    statuses = check_status_filter(status)
    store = app_context(ctx).store()
    rows = store.list_quarantined(statuses=statuses, limit=limit)
    if len(rows) >= limit:
        left_out(len(rows), store.count_quarantined(statuses))

    def human(console: Console) -> None:
        columns = [
            Column("id", "number"),
            Column("event", "id"),
            Column("type", "status"),
            Column("status", "status"),
            Column("seen", "number"),
            Column("first seen", "time", drop=2),
            Column("reason", "prose", drop=1),
        ]
        print_table(
            columns,
            [
                [
                    row.id,
                    row.event_id,
                    row.type,
                    row.status,
                    row.times_seen,
                    row.first_seen_at,
                    row.reason,
                ]
                for row in rows
            ],
            console=console,
            empty=f"no {'' if status == 'all' else status + ' '}events in quarantine",
        )
        if rows and status == "quarantined":
            hint = (
                "retry after a fix: quarantine retry ID (or --all); "
                "give up on one: quarantine dismiss ID"
            )
            # A pipe gets rows only; the hint goes beside them, on stderr.
            if console.is_terminal:
                console.print(hint)
            else:
                note(hint)

    emit([_row_json(row) for row in rows], human)


@app.command("show")
def show(ctx: typer.Context, ref: EventRef, json_output: JsonFlag = False) -> None:
    """Show a quarantined event: its reason, its payload as received, and its audit trail."""
    from cloudgreet_billing.domain.timefmt import iso_z
    from cloudgreet_billing.services.quarantine import find, shown_payload

    store = app_context(ctx).store()
    row = find(store, ref)
    trail = store.audit_trail(f"quarantine:{row.id}")
    payload = shown_payload(row)
    data = {
        **_row_json(row),
        "payload": payload,
        "audit_trail": [
            {
                "occurred_at": iso_z(record.occurred_at),
                "actor": record.actor,
                "action": record.action,
                "outcome": record.outcome,
                "details": dict(record.details),
            }
            for record in trail
        ],
    }

    def human(console: Console) -> None:
        import json

        console.print(f"quarantined event {row.id}: {row.status}")
        console.print(f"  event {row.event_id or '(no event id)'}, type {row.type or '-'}")
        console.print(
            f"  from {row.source}, seen {row.times_seen}×, first {when(row.first_seen_at)}"
        )
        console.print(f"  reason: {row.reason}")
        if row.resolved_at is not None:
            console.print(f"  {row.status} {when(row.resolved_at)} by {row.resolved_by}: ")
            console.print(f"    {row.resolution}")
        for record in trail:
            console.print(
                f"  {when(record.occurred_at)} {record.actor} {record.action}: {record.outcome}"
            )
        console.print("payload:")
        console.print(payload if isinstance(payload, str) else json.dumps(payload, indent=2))

    emit(data, human)


@app.command("retry")
def retry(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Quarantined events' numbers or evt_… ids.", metavar="ID", show_default=False
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Retry every event waiting in quarantine.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Plan and apply quarantined events again with this version's code; exit 4 while any
    stays quarantined.

    Example: cloudgreet-billing quarantine retry --all   # after upgrading the toolkit
    """
    from cloudgreet_billing.cli.sync import planner_for
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.errors import BadInput
    from cloudgreet_billing.services import quarantine as service

    if bool(refs) == all_:
        raise BadInput("give the events to retry, or --all (not both)")
    context = app_context(ctx)
    store = context.store()
    planner = planner_for(context.settings)
    actor, now = context.settings.actor, utcnow()
    if all_:
        results = service.retry_all(store, planner=planner, now=now, actor=actor)
    else:
        rows = [service.find(store, ref) for ref in refs or []]
        results = [service.retry(store, row, planner=planner, now=now, actor=actor) for row in rows]
    still = sum(result.status == "quarantined" for result in results)

    def human(console: Console) -> None:
        if not results:
            console.print("no events in quarantine")
        for result in results:
            console.print(
                f"{result.quarantine_id}  {result.event_id or '(no event id)'}  {_verb(result)}"
            )
        if still:
            console.print(f"{still} still quarantined: fix the cause, or quarantine dismiss ID")

    emit(
        {
            "retried": len(results),
            "applied": len(results) - still,
            "quarantined": still,
            "results": [_result_json(result) for result in results],
        },
        human,
    )
    if still:
        raise typer.Exit(ExitCode.NEEDS_ATTENTION)


def _verb(result: EventResult) -> str:
    if result.status == "quarantined":
        return f"still quarantined: {result.error}"
    if result.status == "duplicate":
        return "already processed (left quarantine)"
    return f"{result.status} (left quarantine)"


def _result_json(result: EventResult) -> dict[str, Any]:
    return {
        "id": result.quarantine_id,
        "event_id": result.event_id,
        "status": result.status,
        "reason": result.error if result.status == "quarantined" else None,
        "alerts_opened": result.alerts_opened,
        "alerts_resolved": result.alerts_resolved,
        "dunning_scheduled": result.dunning_scheduled,
        "dunning_canceled": result.dunning_canceled,
    }


@app.command("dismiss")
def dismiss(
    ctx: typer.Context,
    ref: EventRef,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why it is given up (kept with the event).")
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when not on a TTY)."),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Give up on a quarantined event: it is never applied (its row and payload are kept).

    Example: cloudgreet-billing quarantine dismiss 3 --reason "test event from a fixture" --yes
    """
    from cloudgreet_billing.adapters.store.protocol import AuditDraft
    from cloudgreet_billing.cli.actions import interactive
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.errors import Refused
    from cloudgreet_billing.services.quarantine import find

    context = app_context(ctx)
    store = context.store()
    row = find(store, ref)
    actor, now = context.settings.actor, utcnow()
    if not yes:
        question = (
            f"Dismiss quarantined event {row.id} ({row.event_id or 'no event id'}, "
            f"{row.type or 'no type'})? It will never be applied to the mirror, alerts or "
            "dunning"
        )
        asked = interactive()
        confirmed = False
        if asked:
            try:
                confirmed = typer.confirm(question, default=False, err=True)
            except typer.Abort:  # Ctrl-C or end of input at the prompt: a "no"
                confirmed = False
        if not confirmed:
            why = "declined at the prompt" if asked else "not interactive and no --yes"
            store.append_audit(
                AuditDraft(
                    actor,
                    "quarantine.dismiss",
                    f"quarantine:{row.id}",
                    "refused",
                    details={"reason": why},
                ),
                now,
            )
            if asked:
                raise Refused(f"quarantined event {row.id} kept; nothing was changed")
            raise Refused(
                f"dismissing quarantined event {row.id} discards it for good; "
                "not doing so without confirmation (no terminal to ask on)",
                hint="re-run with --yes",
            )
    dismissed = store.dismiss_quarantined(row.id, reason=reason, actor=actor, now=now)
    emit(
        _row_json(dismissed),
        lambda console: console.print(
            f"quarantined event {dismissed.id} ({dismissed.event_id or 'no event id'}) dismissed"
        ),
    )
