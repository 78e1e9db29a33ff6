"""``dunning run | list | preview | mark-sent | unmark-sent | requeue | pause | resume``,
and (from ``cli/dunning_exemptions.py``) ``exempt | unexempt | exemptions``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.cli import dunning_exemptions, params
from cloudgreet_billing.cli.actions import YesFlag, confirm_gate
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit
from cloudgreet_billing.cli.progress import progress_bar
from cloudgreet_billing.cli.render import dunning_step_json, when
from cloudgreet_billing.domain.words import plural

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.console import Console

    from cloudgreet_billing.domain.dunning import DunningConfig, DunningStep
    from cloudgreet_billing.domain.exemptions import Exemption
    from cloudgreet_billing.services.dunning.run import RunSummary

app = typer.Typer(
    help="Remind customers whose payment failed: email, SMS, escalation.\n\n"
    "Example: cloudgreet-billing dunning run --dry-run",
    no_args_is_help=True,
)

#: Below this many due steps a progress bar is noise.
PROGRESS_THRESHOLD = 200

app.command("exempt")(dunning_exemptions.exempt)
app.command("unexempt")(dunning_exemptions.unexempt)
app.command("exemptions")(dunning_exemptions.exemptions)

StepId = Annotated[
    int,
    typer.Argument(
        help="The step's id (see `dunning list`).", metavar="STEP_ID", parser=params.step_id
    ),
]


def _config(ctx: typer.Context) -> DunningConfig:
    from cloudgreet_billing.domain.dunning import load_dunning_config

    return load_dunning_config(app_context(ctx).settings.config_path)


@app.command("run")
def run(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send and change nothing.")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", parser=params.limit, help="Handle at most this many due steps."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Send every due step once (the cron entry point); safe to run concurrently.

    Exits 4 if a send failed, a due step could reach nobody, or steps wait in
    needs_review; 75 while dunning is paused. --dry-run lists the plan and exits 0.

    Example (crontab): */10 * * * * cloudgreet-billing dunning run --json
    """
    from cloudgreet_billing.bootstrap import open_chat, open_email_sender, open_sms_sender
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.errors import ExitCode
    from cloudgreet_billing.services.dunning.messages import MessageBook
    from cloudgreet_billing.services.dunning.run import Channels, run_dunning

    context = app_context(ctx)
    settings = context.settings
    config = _config(ctx)
    store = context.store()
    book = MessageBook(config.templates_dir)
    channels = None
    if not dry_run:
        channels = Channels(
            email=open_email_sender(settings),
            sms=open_sms_sender(settings),
            slack=open_chat(settings),
            finance_lead_email=settings.finance_lead_email,
        )
    try:
        due = store.count_due_steps(utcnow())
        if limit is not None:
            due = min(due, limit)
        with progress_bar("dunning", total=due, minimum=PROGRESS_THRESHOLD) as progress:
            summary = run_dunning(
                store,
                channels,
                config,
                book,
                actor=settings.actor,
                limit=limit,
                dry_run=dry_run,
                progress=progress,
            )
    finally:
        if channels is not None:
            channels.email.close()
            channels.sms.close()

    def human(console: Console) -> None:
        if summary.paused and not summary.due:
            console.print("dunning is paused: nothing sent (resume with: dunning resume)")
            _print_review(console, summary.needs_review)
            return
        if summary.dry_run:
            _print_plan(console, summary)
            return
        exempt = f" ({summary.exempt} exempt)" if summary.exempt else ""
        console.print(
            f"{summary.due} due: {summary.sent} sent, {summary.skipped} skipped{exempt}, "
            f"{summary.failed} failed, {summary.canceled} canceled; "
            f"{summary.escalated} escalated"
            + ("; stopped: dunning was paused" if summary.paused else "")
        )
        for error in summary.errors:
            target = f"step {error['step_id']}" if "step_id" in error else error["invoice_id"]
            console.print(f"  {target}: {error['error']}")
        _print_undeliverable(console, summary)
        _print_review(console, summary.needs_review)

    emit(summary.as_json(), human)
    if summary.paused:
        raise typer.Exit(ExitCode.UNAVAILABLE)
    if summary.needs_attention and not summary.dry_run:
        raise typer.Exit(ExitCode.NEEDS_ATTENTION)


def _print_plan(console: Console, summary: RunSummary) -> None:
    """A dry run: every due step, what the run would do with it, and why."""
    from cloudgreet_billing.cli.table import Column, print_table

    columns = [
        Column("step", "number"),
        Column("invoice", "id"),
        Column("customer", "id"),
        Column("day", "number"),
        Column("channel", "text"),
        Column("action", "status"),
        Column("to", "id"),
        Column("template", "id"),
        Column("reason", "prose", drop=1),
    ]
    rows = [
        [
            item["step_id"],
            item["invoice_id"],
            item["customer_id"],
            item["day"],
            item["channel"],
            item["action"],
            item["recipient"],
            item["template"],
            item["reason"],
        ]
        for item in summary.planned
    ]
    print_table(columns, rows, console=console)
    console.print(
        f"dry run, nothing sent or changed: {summary.due} due; {summary.would_send} "
        f"would be sent, {summary.skipped} skipped ({summary.undeliverable} undeliverable"
        f"{f', {summary.exempt} exempt' if summary.exempt else ''}), "
        f"{summary.failed} failed, {summary.canceled} canceled; "
        f"{summary.escalated} would escalate"
    )
    _print_review(console, summary.needs_review)


def _print_undeliverable(console: Console, summary: RunSummary) -> None:
    if not summary.undeliverable:
        return
    console.print(
        f"{plural(summary.undeliverable, 'due step')} reached nobody; each invoice has a "
        "dunning_undeliverable alert (alerts list --type dunning_undeliverable):"
    )
    for item in summary.undeliverable_steps:
        console.print(f"  step {item['step_id']} ({item['invoice_id']}): {item['reason']}")


def _print_review(console: Console, waiting: int) -> None:
    if waiting:
        console.print(
            f"{plural(waiting, 'step')} {'waits' if waiting == 1 else 'wait'} in needs_review: "
            "dunning list --status needs_review "
            "says whether each may have been sent"
        )


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="scheduled, sending, sent, skipped, canceled, failed, needs_review, or all "
            "(default: all with --invoice, else the unfinished ones).",
            callback=params.step_status,
        ),
    ] = None,
    invoice: Annotated[
        str | None,
        typer.Option(
            "--invoice", help="Only this invoice's steps (in_…).", callback=params.invoice_id
        ),
    ] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only this customer's steps (cus_…).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Steps due at or after this ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Steps due before this ISO time.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", parser=params.limit, help="At most this many.")
    ] = 50,
    json_output: JsonFlag = False,
) -> None:
    """List dunning steps by due time.

    Example: cloudgreet-billing dunning list --invoice in_1QpL8HLkdIwHu7ixl4OzzPMv
    """
    from cloudgreet_billing.cli.table import Column, left_out, print_table
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.ledger import check_customer_id
    from cloudgreet_billing.domain.timefmt import parse_window
    from cloudgreet_billing.services.dunning.operator import list_steps

    start, end = parse_window(since, until)
    customer_id = check_customer_id(customer) if customer else None
    context = app_context(ctx)
    listing = list_steps(
        context.store(),
        status=status,
        invoice_id=invoice,
        customer_id=customer_id,
        since=start,
        until=end,
        limit=limit,
        actor=context.settings.actor,
        now=utcnow(),
    )
    steps = listing.steps
    exempt = listing.exemptions
    left_out(len(steps), listing.total)

    def human(console: Console) -> None:
        columns = [
            Column("id", "number"),
            Column("invoice", "id"),
            Column("customer", "id"),
            Column("day", "number"),
            Column("channel", "text"),
            Column("status", "status"),
            Column("due", "time"),
            Column("sent", "time", drop=2),
            Column("may be sent", "text"),
            Column("note", "prose", drop=1),
            Column("exempt", "prose", drop=1),
        ]
        rows = [
            [
                step.id,
                step.invoice_id,
                step.customer_id,
                step.day,
                step.channel,
                step.status,
                step.due_at,
                step.sent_at,
                may_be_sent(step),
                step.last_error if step.status == "failed" else step.reason,
                exempt[step.customer_id].label if step.customer_id in exempt else None,
            ]
            for step in steps
        ]
        print_table(columns, rows, console=console, empty="no dunning steps match")

    emit([{**dunning_step_json(step), **_exemption_fields(step, exempt)} for step in steps], human)


def _exemption_fields(step: DunningStep, exempt: Mapping[str, Exemption]) -> dict[str, Any]:
    """``dunning list``'s fields beside the contract's: whether the step's customer is
    exempt from dunning now, why and by whom (both null when not)."""
    exemption = exempt.get(step.customer_id)
    return {
        "exempt_reason": None if exemption is None else exemption.reason,
        "exempt_by": None if exemption is None else exemption.actor,
    }


def may_be_sent(step: DunningStep) -> str:
    """``may_have_been_sent`` for people: ``yes`` (check the provider before mark-sent or
    requeue), ``no`` (it never left: requeue is safe), or blank where it does not apply."""
    flag = step.may_have_been_sent
    return "" if flag is None else "yes" if flag else "no"


@app.command("preview")
def preview(
    ctx: typer.Context,
    identifier: Annotated[
        str,
        typer.Argument(
            help="An invoice id (in_…) or an alert id.",
            metavar="ID",
            callback=params.target(("in_",)),
        ),
    ],
    json_output: JsonFlag = False,
) -> None:
    """Render the messages an invoice's steps would send; exit 2 if a template fails.

    Example: cloudgreet-billing dunning preview in_1QpL8HLkdIwHu7ixl4OzzPMv
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning import operator
    from cloudgreet_billing.services.dunning.messages import MessageBook

    context = app_context(ctx)
    config = _config(ctx)
    invoice_id, messages = operator.preview(
        context.store(),
        MessageBook(config.templates_dir),
        config,
        identifier,
        actor=context.settings.actor,
        now=utcnow(),
    )

    def human(console: Console) -> None:
        for message in messages:
            step = f"step {message.step_id}" if message.step_id else "not scheduled yet"
            console.print(
                f"── day {message.day} {message.channel} ({message.template}, {step}, "
                f"{message.status}) to {message.to or '(no contact: would be skipped)'}"
            )
            if message.subject:
                console.print(f"Subject: {message.subject}")
            console.print(message.body or "")

    emit(
        {
            "invoice_id": invoice_id,
            "messages": [
                {
                    "step_id": m.step_id,
                    "day": m.day,
                    "channel": m.channel,
                    "template": m.template,
                    "status": m.status,
                    "to": m.to,
                    "subject": m.subject,
                    "body": m.body,
                }
                for m in messages
            ],
        },
        human,
    )


ReasonOption = Annotated[
    str | None,
    typer.Option(
        "--reason", help="Why (kept in the audit log and on the step).", callback=params.text
    ),
]


@app.command("mark-sent")
def mark_sent(
    ctx: typer.Context,
    step_id: StepId,
    reason: ReasonOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Mark a step sent even before it is due.")
    ] = False,
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Record that a step's message went out (e.g. a needs_review step you checked by hand).

    Its message is then never sent: asks on a terminal, needs --yes elsewhere (exit 3).
    A step not yet due needs --force (exit 3 without). Undo it with `dunning unmark-sent`.

    Example: cloudgreet-billing dunning mark-sent 31 --reason "sent by hand" --yes
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning import operator

    context = app_context(ctx)
    step = operator.mark_sent(
        context.store(),
        step_id,
        actor=context.settings.actor,
        now=utcnow(),
        safety=confirm_gate(context, yes=yes),
        force=force,
        reason=reason,
    )
    emit(
        dunning_step_json(step),
        lambda console: console.print(
            f"step {step.id} ({step.invoice_id}) marked sent; undo with: "
            f"cloudgreet-billing dunning unmark-sent {step.id}"
        ),
    )


@app.command("unmark-sent")
def unmark_sent(
    ctx: typer.Context,
    step_id: StepId,
    reason: ReasonOption = None,
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Undo a `dunning mark-sent`: the step goes back to the status it had before.

    Only a step marked sent by hand can be unmarked, not one a run sent. A step that was
    scheduled is then sent by the next run. Asks on a terminal, needs --yes elsewhere.

    Example: cloudgreet-billing dunning unmark-sent 31 --yes
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning import operator

    context = app_context(ctx)
    step, mark = operator.unmark_sent(
        context.store(),
        step_id,
        actor=context.settings.actor,
        now=utcnow(),
        safety=confirm_gate(context, yes=yes),
        reason=reason,
    )
    emit(
        dunning_step_json(step),
        lambda console: console.print(
            f"step {step.id} ({step.invoice_id}) is {step.status} again "
            f"(marked sent by {mark.actor} at {when(mark.occurred_at)})"
        ),
    )


@app.command("requeue")
def requeue(
    ctx: typer.Context, step_id: StepId, yes: YesFlag = False, json_output: JsonFlag = False
) -> None:
    """Schedule a failed, skipped or needs_review step again; the next run sends it.

    It will reach the customer: asks on a terminal, needs --yes elsewhere (exit 3).

    Example: cloudgreet-billing dunning requeue 31 --yes
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning import operator

    context = app_context(ctx)
    step = operator.requeue(
        context.store(),
        step_id,
        actor=context.settings.actor,
        now=utcnow(),
        safety=confirm_gate(context, yes=yes),
    )
    emit(
        dunning_step_json(step),
        lambda console: console.print(
            f"step {step.id} ({step.invoice_id}) requeued; the next `dunning run` sends it"
        ),
    )


@app.command("pause")
def pause(
    ctx: typer.Context,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (shown to whoever resumes).", callback=params.text)
    ],
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Stop all dunning sends (incident switch); runs exit 75 until `dunning resume`.

    While already paused, the first pause's reason, actor and time stay: this says who
    paused, when and why, and exits 3; confirmed (a prompt, or --yes) it adds your reason
    beside theirs.

    Example: cloudgreet-billing dunning pause --reason "Stripe incident"
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning import operator

    context = app_context(ctx)
    outcome = operator.pause(
        context.store(),
        reason=reason,
        actor=context.settings.actor,
        now=utcnow(),
        safety=confirm_gate(context, yes=yes),
    )
    state = outcome.state

    def human(console: Console) -> None:
        if outcome.already:
            console.print(
                f"dunning stays paused by {state.actor} since {state.at}: {state.reason}; "
                f"your reason is added beside it"
            )
        else:
            console.print(f"dunning paused by {state.actor}: {state.reason}")

    emit(
        {
            "paused": True,
            "reason": state.reason,
            "actor": state.actor,
            "at": state.at,
            "already_paused": outcome.already,
            "also": [dict(note) for note in state.also],
        },
        human,
    )


@app.command("resume")
def resume(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Let dunning runs send again.

    Example: cloudgreet-billing dunning resume
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.timefmt import parse_instant
    from cloudgreet_billing.services.dunning import operator

    context = app_context(ctx)
    before, after = operator.resume(context.store(), actor=context.settings.actor, now=utcnow())

    def human(console: Console) -> None:
        if before.paused:
            paused_at = when(parse_instant(before.at)) if before.at else "an unknown time"
            console.print(
                f"dunning resumed by {after.actor} (paused by {before.actor} at {paused_at}: "
                f"{before.reason})"
            )
        else:
            console.print("dunning was not paused")

    emit(
        {
            "paused": False,
            "was_paused": before.paused,
            "actor": after.actor,
            "at": after.at,
        },
        human,
    )
