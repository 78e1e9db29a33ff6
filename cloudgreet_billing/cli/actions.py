"""``retry``, ``resend-link``, ``portal``: operator actions that reach Stripe or a customer.

Every one shows test or LIVE mode on stderr first, asks on a terminal (``--yes`` when
there is none), can print its exact request instead (``--dry-run``), and is audited.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit
from cloudgreet_billing.cli.render import money

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.adapters.payments import RequestPreview
    from cloudgreet_billing.cli.context import AppContext
    from cloudgreet_billing.services.actions import Banner, ConfirmRequest, Safety

TargetArg = Annotated[
    str,
    typer.Argument(help="An alert id, or an invoice id (in_…).", metavar="ID", show_default=False),
]
DryRunFlag = Annotated[
    bool,
    typer.Option("--dry-run", help="Print the exact Stripe request (and key); send nothing."),
]
YesFlag = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when not on a TTY)."),
]


def interactive() -> bool:
    """Whether a person can answer a prompt: stdin and stderr are both terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _safety(context: AppContext, *, dry_run: bool, yes: bool) -> Safety:
    from cloudgreet_billing.config import redact
    from cloudgreet_billing.services.actions import Safety

    key_shown = redact(context.settings.stripe_secret_key)

    def show_banner(banner: Banner) -> None:
        mode = "LIVE" if banner.mode == "live" else "test"
        parts = [f"Stripe {mode} mode"]
        if banner.account_id:
            name = f" ({banner.account_name})" if banner.account_name else ""
            parts.append(f"account {banner.account_id}{name}")
        parts.append(f"key {key_shown}")
        if banner.dry_run:
            parts.append("dry run: nothing will be sent")
        sys.stderr.write(" · ".join(parts) + "\n")

    def describe(request: ConfirmRequest) -> None:
        who = request.customer_id or "?"
        if request.customer_label:
            who += f" ({request.customer_label})"
        lines = [f"  customer: {who}"]
        if request.invoice_id:
            lines.append(f"  invoice:  {request.invoice_id}")
        if request.amount is not None:
            lines.append(f"  amount:   {money(request.amount, request.currency)}")
        sys.stderr.write("\n".join(lines) + "\n")

    def confirm(request: ConfirmRequest) -> bool:
        describe(request)
        prefix = "[LIVE] " if request.mode == "live" else "[test] "
        try:
            return typer.confirm(prefix + request.question, default=False, err=True)
        except typer.Abort:  # Ctrl-C or end of input at the prompt: a "no"
            sys.stderr.write("\n")
            return False

    def announce(request: ConfirmRequest) -> None:
        # With --yes nobody is asked, but the log still says who and how much.
        sys.stderr.write(f"{request.action} (--yes):\n")
        describe(request)

    return Safety(
        dry_run=dry_run,
        assume_yes=yes,
        interactive=interactive(),
        confirm=confirm,
        announce=announce,
        show_banner=show_banner,
    )


def _request_lines(console: Console, request: RequestPreview) -> None:
    import json

    console.print("dry run: nothing was sent. The request:")
    console.print(f"  {request.method} {request.path}")
    console.print(f"  Idempotency-Key: {request.idempotency_key}")
    params = json.dumps(dict(request.params), sort_keys=True) if request.params else "(none)"
    console.print(f"  params: {params}")


def _with_request(data: dict[str, Any], request: RequestPreview | None) -> dict[str, Any]:
    if request is None:
        return data
    from cloudgreet_billing.services.actions import request_json

    return {**data, "dry_run": True, "request": request_json(request)}


def retry(
    ctx: typer.Context,
    target: TargetArg,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    force: Annotated[
        bool, typer.Option("--force", help="Charge even while dunning is paused.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Charge an invoice now (invoices.pay), once: its idempotency key is fixed by the invoice.

    On success the alert is resolved and pending dunning canceled; a decline prints the
    decline code and exits 1.

    Example: cloudgreet-billing retry in_1PqR2sT3 --dry-run
    """
    from cloudgreet_billing.bootstrap import open_gateway
    from cloudgreet_billing.services.actions import retry_payment

    context = app_context(ctx)
    gateway = open_gateway(context.settings)
    result = retry_payment(
        context.store(),
        gateway,
        target,
        safety=_safety(context, dry_run=dry_run, yes=yes),
        actor=context.settings.actor,
        force=force,
    )

    def human(console: Console) -> None:
        amount = money(result.amount_due, result.currency)
        if result.request is not None:
            console.print(f"invoice {result.invoice_id}: {amount}, {result.status} (mirror)")
            _request_lines(console, result.request)
            if result.paused:
                console.print("dunning is paused: a real run needs --force")
            return
        if result.outcome == "processing":
            console.print(
                f"payment submitted for {result.invoice_id} ({amount}); Stripe has not "
                "confirmed it yet, so the alert stays open until sync sees it paid"
            )
            return
        head = (
            f"paid: invoice {result.invoice_id}, {money(result.amount_paid, result.currency)}"
            if result.outcome == "paid"
            else f"invoice {result.invoice_id} was already paid; nothing was charged"
        )
        tail = []
        if result.resolved_alert_ids:
            ids = ", ".join(str(i) for i in result.resolved_alert_ids)
            tail.append(f"alert{'s' if len(result.resolved_alert_ids) > 1 else ''} {ids} resolved")
        if result.canceled_steps:
            tail.append(f"{result.canceled_steps} pending dunning step(s) canceled")
        console.print(head + (f" ({'; '.join(tail)})" if tail else ""))

    emit(_with_request(result.as_json(), result.request), human)


def resend_link(
    ctx: typer.Context,
    target: TargetArg,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Have Stripe email an open invoice, with its pay link, to the customer again.

    Invoices that are not open (draft, paid, void, uncollectible) are refused without
    calling Stripe. At most one send per invoice and day.

    Example: cloudgreet-billing resend-link 42 --yes
    """
    from cloudgreet_billing.bootstrap import open_gateway
    from cloudgreet_billing.services.actions import resend_link as resend

    context = app_context(ctx)
    gateway = open_gateway(context.settings)
    result = resend(
        context.store(),
        gateway,
        target,
        safety=_safety(context, dry_run=dry_run, yes=yes),
        actor=context.settings.actor,
    )

    def human(console: Console) -> None:
        amount = money(result.amount_due, result.currency)
        if result.request is not None:
            console.print(f"invoice {result.invoice_id}: {amount}, {result.status} (mirror)")
            _request_lines(console, result.request)
        elif result.earlier is not None:
            console.print(
                f"invoice {result.invoice_id} was already resent today "
                f"({result.earlier.occurred_at:%H:%M} UTC by {result.earlier.actor}); "
                "Stripe will not send it again today"
            )
        else:
            console.print(f"Stripe is emailing invoice {result.invoice_id} ({amount}) again")
            if result.hosted_invoice_url:
                console.print(f"pay link: {result.hosted_invoice_url}")

    emit(_with_request(result.as_json(), result.request), human)


def portal(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            help="An alert id, an invoice id (in_…) or a customer id (cus_…).",
            metavar="ID",
            show_default=False,
        ),
    ],
    return_url: Annotated[
        str | None,
        typer.Option(
            "--return-url",
            help="Where the portal sends the customer back to (default: $APP_URL/admin/billing).",
        ),
    ] = None,
    send: Annotated[
        bool,
        typer.Option("--send", help="Email the link to the customer and note it on the alert."),
    ] = False,
    yes: YesFlag = False,
    dry_run: DryRunFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Make a Stripe customer-portal link (billing_portal.sessions.create) and print it.

    With --send the link is emailed through the email backend and the alert gets the
    note "portal link sent; follow up in CRM"; that asks for confirmation like retry.

    Example: cloudgreet-billing portal cus_Q1w2E3 --send
    """
    from cloudgreet_billing.bootstrap import open_email_sender, open_gateway
    from cloudgreet_billing.services.actions import portal_link

    context = app_context(ctx)
    settings = context.settings
    gateway = open_gateway(settings)
    email = open_email_sender(settings) if send and not dry_run else None
    try:
        result = portal_link(
            context.store(),
            gateway,
            target,
            safety=_safety(context, dry_run=dry_run, yes=yes),
            actor=settings.actor,
            app_url=settings.app_url,
            return_url=return_url,
            send=send,
            email=email,
        )
    finally:
        if email is not None:
            email.close()

    def human(console: Console) -> None:
        if result.request is not None:
            _request_lines(console, result.request)
            if send:
                console.print(f"then email the link to {result.email_to or 'the customer'}")
            return
        if result.earlier is not None:
            console.print(
                f"a portal link was already emailed to {result.email_to} today "
                f"({result.earlier.occurred_at:%H:%M} UTC by {result.earlier.actor}); "
                "not sending another"
            )
            return
        console.print(result.url or "")
        if result.sent:
            console.print(f"emailed to {result.email_to}; noted on the alert")

    emit(_with_request(result.as_json(), result.request), human)
