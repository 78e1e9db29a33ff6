"""``retry``, ``resend-link``, ``portal``: operator actions that reach Stripe or a customer.

Every one shows test or LIVE mode on stderr first, asks on a terminal (``--yes`` when
there is none), can print its exact request instead (``--dry-run``), and is audited. A dry
run applies every check the real run applies, reading Stripe when a key is set and the
local mirror when none is (it needs no key), and exits as the real run would.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from cloudgreet_billing.cli import params
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit
from cloudgreet_billing.cli.render import money
from cloudgreet_billing.domain.words import plural

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.adapters.payments import PaymentGateway, RequestPreview
    from cloudgreet_billing.cli.context import AppContext
    from cloudgreet_billing.services.actions import Banner, ConfirmRequest, Safety

TargetArg = Annotated[
    str,
    typer.Argument(
        help="An alert id, or an invoice id (in_…).",
        metavar="ID",
        show_default=False,
        callback=params.target(("in_",)),
    ),
]
DryRunFlag = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Check as a real run would, print the exact request; send nothing. No key "
        "needed: without one it checks the local mirror.",
    ),
]
YesFlag = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when not on a TTY)."),
]


def interactive() -> bool:
    """Whether a person can answer a prompt: stdin and stderr are both terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _gateway(context: AppContext, *, dry_run: bool) -> PaymentGateway | None:
    """Stripe, held to the command's deadline; None for a dry run with no key set."""
    from cloudgreet_billing.bootstrap import open_gateway
    from cloudgreet_billing.cli.output import stripe_is_slow

    if dry_run and not context.settings.stripe_secret_key:
        return None
    return open_gateway(context.settings, on_slow=stripe_is_slow)


def _mode_label(mode: str | None, stream: TextIO | None = None) -> str:
    """``LIVE`` or ``test``; ``LIVE`` stands out in colour when written to a terminal."""
    from cloudgreet_billing.cli.table import stand_out

    if mode != "live":
        return "test"
    return "LIVE" if stream is None else stand_out("LIVE", stream)


def _safety(context: AppContext, *, dry_run: bool, yes: bool) -> Safety:
    from cloudgreet_billing.config import redact
    from cloudgreet_billing.services.actions import Safety

    key_shown = redact(context.settings.stripe_secret_key)

    def show_banner(banner: Banner) -> None:
        if banner.mode is None:
            parts = ["no Stripe key set"]
        else:
            parts = [f"Stripe {_mode_label(banner.mode, sys.stderr)} mode"]
            if banner.account_id:
                name = f" ({banner.account_name})" if banner.account_name else ""
                parts.append(f"account {banner.account_id}{name}")
            parts.append(f"key {key_shown}")
        if banner.dry_run:
            checked = "the local mirror" if banner.mode is None else "Stripe"
            parts.append(f"dry run: checks {checked}, sends nothing")
        sys.stderr.write(" · ".join(parts) + "\n")

    def describe(request: ConfirmRequest) -> None:
        if request.customer_id is None and request.invoice_id is None:
            return  # about no customer (a second dunning pause): the question says it all
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
        # A Stripe action names its mode; a store-only one (dunning, alerts) has none.
        known = request.mode in ("live", "test")
        prefix = f"[{_mode_label(request.mode, sys.stderr)}] " if known else ""
        try:
            return typer.confirm(prefix + request.question, default=False, err=True)
        except typer.Abort:  # Ctrl-C or end of input at the prompt: a "no"
            sys.stderr.write("\n")
            return False

    def announce(request: ConfirmRequest) -> None:
        # With --yes nobody is asked, but the log still says who and how much.
        if request.customer_id is None and request.invoice_id is None:
            sys.stderr.write(f"{request.action} (--yes): {request.question}\n")
            return
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


def confirm_gate(context: AppContext, *, yes: bool) -> Safety:
    """The confirmation of a command that changes what reaches a customer or the audit
    trail without calling Stripe (``dunning mark-sent``, ``alerts resolve``…): the same
    prompt as the payment actions on a terminal, ``--yes`` elsewhere."""
    return _safety(context, dry_run=False, yes=yes)


class _Preview:
    """What every dry run shows besides its request: the key a real run would use and
    where the checks read their state."""

    def __init__(self, context: AppContext, result: Any) -> None:
        from cloudgreet_billing.config import redact

        settings = context.settings
        self.key = redact(settings.stripe_secret_key) or None
        self.mode = settings.stripe_mode
        self.source: str = result.source
        self.request: RequestPreview | None = result.request

    def json(self, data: dict[str, Any]) -> dict[str, Any]:
        from cloudgreet_billing.services.actions import request_json

        extra: dict[str, Any] = {
            "dry_run": True,
            "stripe_key": self.key,
            "mode": self.mode,
            "checked_against": self.source,
        }
        if self.request is not None:
            extra["request"] = request_json(self.request)
        return {**data, **extra}

    def lines(self, console: Console) -> None:
        import json

        if self.request is not None:
            console.print("dry run: nothing was sent. The request:")
            console.print(f"  {self.request.method} {self.request.path}")
            console.print(f"  Idempotency-Key: {self.request.idempotency_key}")
            params = self.request.params
            shown = json.dumps(dict(params), sort_keys=True) if params else "(none)"
            console.print(f"  params: {shown}")
        else:
            console.print("dry run: nothing was sent, and a real run would send nothing.")
        if self.key is None:
            console.print("  key: none (STRIPE_SECRET_KEY is not set; a real run needs one)")
        else:
            from cloudgreet_billing.cli.table import Styled, styled_text

            mode = Styled("LIVE") if self.mode == "live" else "test"
            console.print(f"  key: {self.key} (", styled_text(mode, console), " mode)", sep="")
        if self.source == "mirror":
            console.print("  checked against: the local mirror (no key; Stripe may know better)")
        else:
            console.print("  checked against: Stripe, just now")


def _emit(context: AppContext, result: Any, human: Any) -> None:
    data = result.as_json()
    emit(_Preview(context, result).json(data) if result.dry_run else data, human)


def retry(
    ctx: typer.Context,
    target: TargetArg,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Charge even while dunning is paused, after a hard decline on an unchanged "
            "card, or shortly before Stripe's own retry.",
        ),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Charge an invoice now (invoices.pay), once: its idempotency key is fixed by the invoice.

    On success the alert is resolved and pending dunning canceled; a decline prints the
    decline code and exits 1. Refused (exit 3) without --force: a hard decline whose card
    has not changed (send the portal link instead), and a charge Stripe makes itself
    within BILLING_RETRY_RACE_WINDOW (asked on a terminal).

    Example: cloudgreet-billing retry in_1PqR2sT3 --dry-run
    """
    from cloudgreet_billing.services.actions import retry_payment

    context = app_context(ctx)
    result = retry_payment(
        context.store(),
        _gateway(context, dry_run=dry_run),
        target,
        safety=_safety(context, dry_run=dry_run, yes=yes),
        actor=context.settings.actor,
        force=force,
        race_window=context.settings.retry_race_window,
    )

    def human(console: Console) -> None:
        from cloudgreet_billing.cli.render import when

        amount = money(result.amount, result.currency)
        if result.dry_run:
            if result.outcome == "already_paid":
                console.print(
                    f"invoice {result.invoice_id} is already paid: a real run charges nothing"
                    + (f" and resolves alert {result.alert_id}" if result.alert_id else "")
                )
            else:
                console.print(f"would charge {amount} for invoice {result.invoice_id}")
            _Preview(context, result).lines(console)
            if result.paused:
                console.print("dunning is paused: --force charges anyway")
            if result.stripe_retries_at is not None:
                console.print(f"Stripe's next own attempt: {when(result.stripe_retries_at)}")
            return
        if result.outcome == "submitted":
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
            tail.append(f"{plural(result.canceled_steps, 'pending dunning step')} canceled")
        console.print(head + (f" ({'; '.join(tail)})" if tail else ""))

    _emit(context, result, human)


def resend_link(
    ctx: typer.Context,
    target: TargetArg,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Have Stripe email an open invoice, with its pay link, to the customer again.

    A paid invoice needs nothing (exit 0); a draft, void or uncollectible one is refused
    (exit 2) before anything is sent. At most one send per invoice and day.

    Example: cloudgreet-billing resend-link 42 --yes
    """
    from cloudgreet_billing.services.actions import resend_link as resend

    context = app_context(ctx)
    result = resend(
        context.store(),
        _gateway(context, dry_run=dry_run),
        target,
        safety=_safety(context, dry_run=dry_run, yes=yes),
        actor=context.settings.actor,
    )

    def human(console: Console) -> None:
        amount = money(result.amount_due, result.currency)
        if result.outcome == "already_paid":
            console.print(f"invoice {result.invoice_id} is already paid; nothing was sent")
        elif result.earlier is not None:
            console.print(
                f"invoice {result.invoice_id} was already resent today "
                f"({result.earlier.occurred_at:%H:%M} UTC by {result.earlier.actor}); "
                "Stripe will not send it again today"
            )
        elif result.dry_run:
            console.print(f"would have Stripe email invoice {result.invoice_id} ({amount})")
        else:
            console.print(f"Stripe is emailing invoice {result.invoice_id} ({amount}) again")
            if result.hosted_invoice_url:
                console.print(f"pay link: {result.hosted_invoice_url}")
        if result.dry_run:
            _Preview(context, result).lines(console)

    _emit(context, result, human)


def portal(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            help="An alert id, an invoice id (in_…) or a customer id (cus_…).",
            metavar="ID",
            show_default=False,
            callback=params.target(("in_", "cus_")),
        ),
    ],
    return_url: Annotated[
        str | None,
        typer.Option(
            "--return-url",
            help="Where the portal sends the customer back to (default: $APP_URL/admin/billing).",
            callback=params.http_url,
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
    from cloudgreet_billing.bootstrap import open_email_sender
    from cloudgreet_billing.services.actions import portal_link

    context = app_context(ctx)
    settings = context.settings
    gateway = _gateway(context, dry_run=dry_run)
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
        if result.earlier is not None:
            console.print(
                f"a portal link was already emailed to {result.email_to} today "
                f"({result.earlier.occurred_at:%H:%M} UTC by {result.earlier.actor}); "
                "not sending another"
            )
        elif result.dry_run:
            console.print(f"would make a portal link for {result.customer_id}")
            if send:
                console.print(
                    f"then email it to {result.email_to}"
                    if result.email_to
                    else "then email it to the customer's address in Stripe"
                )
        else:
            console.print(result.url or "")
            if result.sent:
                console.print(f"emailed to {result.email_to}; noted on the alert")
        if result.dry_run:
            _Preview(context, result).lines(console)

    _emit(context, result, human)
