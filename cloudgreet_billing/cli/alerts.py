"""``alerts list | show | ack | resolve | note``: what needs a person."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.cli.actions import YesFlag, confirm_gate
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit
from cloudgreet_billing.cli.render import alert_json, money, when

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.services.alerts import AlertDetail, AlertView

app = typer.Typer(
    help="List, inspect, acknowledge, resolve and annotate alerts.", no_args_is_help=True
)

AlertId = Annotated[str, typer.Argument(help="The alert's id (see `alerts list`).", metavar="ID")]


@app.command("list")
def list_(
    ctx: typer.Context,
    type_: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="invoice_failed, payment_action_required, threshold_exceeded, "
            "dunning_exhausted or dunning_undeliverable.",
        ),
    ] = None,
    status: Annotated[
        str, typer.Option("--status", help="open, acknowledged, resolved or all.")
    ] = "open",
    customer: Annotated[str | None, typer.Option("--customer", help="Only this cus_….")] = None,
    invoice: Annotated[str | None, typer.Option("--invoice", help="Only this in_….")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Alerts opened at or after this ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Alerts opened before this ISO time.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    json_output: JsonFlag = False,
) -> None:
    """List alerts, newest first (default: the open ones)."""
    from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
    from cloudgreet_billing.cli.table import Column, left_out, print_table
    from cloudgreet_billing.domain.alerts import check_alert_type, check_status_filter
    from cloudgreet_billing.domain.ledger import check_customer_id, check_invoice_id
    from cloudgreet_billing.domain.timefmt import parse_window
    from cloudgreet_billing.services.alerts import count_alerts, list_alerts

    start, end = parse_window(since, until)
    query = AlertQuery(
        types=(check_alert_type(type_),) if type_ else None,
        statuses=check_status_filter(status),
        customer_id=check_customer_id(customer) if customer else None,
        invoice_id=check_invoice_id(invoice),
        since=start,
        until=end,
        limit=limit,
    )
    store = app_context(ctx).store()
    views = list_alerts(store, query)
    if len(views) >= limit:
        left_out(len(views), count_alerts(store, query))

    def human(console: Console) -> None:
        columns = [
            Column("id", "number"),
            Column("type", "status"),
            Column("status", "status"),
            Column("customer", "id"),
            Column("invoice", "id"),
            Column("amount", "money"),
            Column("opened", "time", drop=2),
            Column("notes", "number", drop=1),
        ]
        rows = [
            [
                view.alert.id,
                view.alert.type,
                view.alert.status,
                view.alert.customer_id,
                view.alert.invoice_id,
                money(view.alert.amount_due, view.alert.currency),
                view.alert.created_at,
                len(view.notes) or None,
            ]
            for view in views
        ]
        empty = f"no {'' if status == 'all' else status + ' '}alerts"
        print_table(columns, rows, console=console, empty=empty)

    emit([alert_json(view.alert, view.notes) for view in views], human)


@app.command("show")
def show(
    ctx: typer.Context,
    alert_id: Annotated[
        str,
        typer.Argument(
            help="The alert's id (see `alerts list`), or an invoice id (in_…): its newest alert.",
            metavar="ID",
        ),
    ],
    json_output: JsonFlag = False,
) -> None:
    """Show an alert with its invoice, dunning steps, notes and audit trail."""
    from cloudgreet_billing.cli.output import note
    from cloudgreet_billing.domain.alerts import parse_alert_id
    from cloudgreet_billing.domain.ledger import check_invoice_id
    from cloudgreet_billing.services.alerts import newest_alert_of_invoice, show_alert

    store = app_context(ctx).store()
    if alert_id.strip().startswith("in_"):
        invoice_id = check_invoice_id(alert_id)
        assert invoice_id is not None
        number, alerts = newest_alert_of_invoice(store, invoice_id)
        if alerts > 1:
            note(
                f"{invoice_id} has {alerts} alerts; showing the newest, {number} "
                f"(all of them: alerts list --invoice {invoice_id} --status all)"
            )
    else:
        number = parse_alert_id(alert_id)
    detail = show_alert(store, number)
    emit(_detail_json(detail), lambda console: _human_detail(console, detail))


def _detail_json(detail: AlertDetail) -> dict[str, Any]:
    from cloudgreet_billing.cli.render import dunning_step_json
    from cloudgreet_billing.domain.timefmt import iso_z

    invoice = detail.invoice
    return {
        **alert_json(detail.alert, detail.notes),
        "attempt_count": detail.alert.attempt_count,
        "last_failure": detail.alert.last_failure,
        "acknowledged_at": iso_z(detail.alert.acknowledged_at),
        "invoice": None
        if invoice is None
        else {
            "id": invoice.id,
            "customer_id": invoice.customer_id,
            "subscription_id": invoice.subscription_id,
            "number": invoice.number,
            "status": invoice.status,
            "amount_due": invoice.amount_due,
            "amount_remaining": invoice.amount_remaining,
            "currency": invoice.currency,
            "attempt_count": invoice.attempt_count,
            "first_failed_at": iso_z(invoice.first_failed_at),
            "last_failure_code": invoice.last_failure_code,
            "last_failure_message": invoice.last_failure_message,
            "hosted_invoice_url": invoice.hosted_invoice_url,
        },
        "dunning_steps": [dunning_step_json(step) for step in detail.steps],
        "audit_trail": [
            {
                "occurred_at": iso_z(record.occurred_at),
                "actor": record.actor,
                "action": record.action,
                "target": record.target,
                "outcome": record.outcome,
                "details": dict(record.details),
            }
            for record in detail.audit
        ],
    }


def _human_detail(console: Console, detail: AlertDetail) -> None:
    alert = detail.alert
    console.print(f"alert {alert.id}: {alert.type}, {alert.status}")
    console.print(f"  customer {alert.customer_id or '-'}, invoice {alert.invoice_id or '-'}")
    if alert.amount_due is not None:
        console.print(f"  amount due {money(alert.amount_due, alert.currency)}")
    if alert.last_failure:
        console.print(f"  last failure: {alert.last_failure} (attempts: {alert.attempt_count})")
    console.print(f"  opened {when(alert.created_at)}, updated {when(alert.updated_at)}")
    if alert.resolved_at:
        console.print(f"  resolved {when(alert.resolved_at)}: {alert.resolution}")
    if detail.invoice is not None:
        invoice = detail.invoice
        console.print(
            f"invoice {invoice.id}: {invoice.status}, "
            f"{money(invoice.amount_remaining, invoice.currency)} remaining"
        )
    if detail.steps:
        console.print("dunning steps:")
        for step in detail.steps:
            console.print(
                f"  {step.id}: day {step.day} {step.channel} {step.status}, due {when(step.due_at)}"
                + _review_note(step.may_have_been_sent if step.status == "needs_review" else None)
            )
    if detail.notes:
        console.print("notes:")
        for note in detail.notes:
            console.print(f"  {when(note.created_at)} {note.author}: {note.body}")
    if detail.audit:
        console.print("audit trail:")
        for record in detail.audit:
            console.print(
                f"  {when(record.occurred_at)} {record.actor} {record.action} "
                f"{record.target}: {record.outcome}"
            )


def _review_note(may_have_been_sent: bool | None) -> str:
    if may_have_been_sent is None:
        return ""
    if may_have_been_sent:
        return " (may have been sent: check the provider, then mark-sent or requeue)"
    return " (never handed to a provider: requeue is safe)"


def _one(view: AlertView, console: Console, verb: str) -> None:
    alert = view.alert
    console.print(f"alert {alert.id} {verb} ({alert.type}, now {alert.status})")


@app.command("ack")
def ack(ctx: typer.Context, alert_id: AlertId, json_output: JsonFlag = False) -> None:
    """Acknowledge an alert: someone is on it. A second ack says "already acknowledged"."""
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.alerts import parse_alert_id
    from cloudgreet_billing.services.alerts import acknowledge, acknowledged_by

    context = app_context(ctx)
    store = context.store()
    view, changed = acknowledge(
        store, parse_alert_id(alert_id), actor=context.settings.actor, now=utcnow()
    )

    def human(console: Console) -> None:
        if changed:
            _one(view, console, "acknowledged")
            return
        by = acknowledged_by(store, view.alert.id)
        console.print(
            f"alert {view.alert.id} already acknowledged"
            + (f" by {by}" if by else "")
            + (f" at {when(view.alert.acknowledged_at)}" if view.alert.acknowledged_at else "")
            + "; nothing changed"
        )

    emit({**alert_json(view.alert, view.notes), "changed": changed}, human)


@app.command("resolve")
def resolve(
    ctx: typer.Context,
    alert_id: AlertId,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why it is resolved (kept on the alert).")
    ] = None,
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Resolve an alert by hand (paying the invoice resolves its alerts by itself).

    It leaves everyone's list: asks on a terminal, needs --yes elsewhere (exit 3). An
    alert already resolved is left as it is (exit 0), unasked.
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.alerts import parse_alert_id
    from cloudgreet_billing.services.alerts import resolve as resolve_alert

    context = app_context(ctx)
    view, changed = resolve_alert(
        context.store(),
        parse_alert_id(alert_id),
        reason=reason,
        actor=context.settings.actor,
        now=utcnow(),
        safety=confirm_gate(context, yes=yes),
    )
    verb = "resolved" if changed else "was already resolved"
    emit(
        {**alert_json(view.alert, view.notes), "changed": changed},
        lambda console: _one(view, console, verb),
    )


@app.command("note")
def note_(
    ctx: typer.Context,
    alert_id: AlertId,
    text: Annotated[str, typer.Argument(help="The note.", metavar="TEXT")],
    json_output: JsonFlag = False,
) -> None:
    """Add a note to an alert (who called whom, what was promised).

    Example: cloudgreet-billing alerts note 12 "called the owner, card updated tomorrow"
    """
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.alerts import parse_alert_id
    from cloudgreet_billing.services.alerts import add_note

    context = app_context(ctx)
    view = add_note(
        context.store(), parse_alert_id(alert_id), text, actor=context.settings.actor, now=utcnow()
    )
    emit(alert_json(view.alert, view.notes), lambda console: _one(view, console, "noted"))
