"""What every operator action shares: targets, the safety gate, and the audit story.

An action runs in a fixed order, so that each refusal happens before anything reaches
Stripe or a customer:

1. resolve the target from the store (an alert id, ``in_…``, or ``cus_…`` for ``portal``);
2. refuse what the action's own rules forbid (``retry`` while dunning is paused);
3. refuse when the operator cannot confirm (no TTY and no ``--yes``; a dry run needs none);
4. show the mode and account, read fresh state from Stripe and apply every check;
5. a dry run stops here with the exact request; a real run asks, and acts.

A dry run takes the same path as the real run up to the request it would send, so it
exits as the real run would. With no Stripe key (``gateway`` is None, allowed only in a dry
run) it judges the local mirror's copy instead, and says so (``source``).

The audit log gets one line per refusal or dry run, and around every call an ``intent``
line before and an outcome line after, with the actor from ``BILLING_ACTOR``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NoReturn

from cloudgreet_billing.adapters.payments import (
    PaymentGateway,
    RequestPreview,
    StripeObject,
    StripeRequestFailed,
)
from cloudgreet_billing.adapters.store.protocol import AuditDraft, Store
from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.domain.alerts import UNRESOLVED_STATUSES, Alert
from cloudgreet_billing.domain.mirror import MirroredInvoice, parse_invoice
from cloudgreet_billing.errors import (
    BadInput,
    BillingError,
    ConfigError,
    ExitCode,
    NotFound,
    Refused,
)

#: Where a dry run read the state it judged.
FROM_STRIPE = "stripe"
FROM_MIRROR = "mirror"


@dataclass(frozen=True)
class Banner:
    """What the stderr banner shows before anything is sent (``mode`` None: no key)."""

    mode: str | None
    account_id: str | None = None
    account_name: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class ConfirmRequest:
    """What the operator is asked to confirm: who, what, how much, in which mode."""

    action: str
    question: str
    mode: str
    customer_id: str | None
    customer_label: str | None
    invoice_id: str | None
    amount: int | None
    currency: str | None
    account_id: str | None = None


@dataclass(frozen=True)
class Safety:
    """How the operator approved the action, and how to reach them (the CLI's callbacks)."""

    dry_run: bool = False
    assume_yes: bool = False
    interactive: bool = False
    confirm: Callable[[ConfirmRequest], bool] = field(default=lambda _request: False)
    #: Told what is about to happen when ``assume_yes`` skips the question.
    announce: Callable[[ConfirmRequest], None] = field(default=lambda _request: None)
    show_banner: Callable[[Banner], None] = field(default=lambda _banner: None)
    clock: Callable[[], datetime] = utcnow

    @property
    def can_confirm(self) -> bool:
        return self.dry_run or self.assume_yes or self.interactive


@dataclass(frozen=True)
class ActionTarget:
    """What an operator named, resolved against the store (nothing fetched yet)."""

    given: str
    alert: Alert | None
    invoice_id: str | None
    customer_id: str | None
    invoice: MirroredInvoice | None

    @property
    def alert_id(self) -> int | None:
        return None if self.alert is None else self.alert.id


def request_json(preview: RequestPreview) -> dict[str, Any]:
    """A request as ``--dry-run`` shows it (and as the audit log keeps it)."""
    return {
        "method": preview.method,
        "path": preview.path,
        "params": dict(preview.params),
        "idempotency_key": preview.idempotency_key,
    }


def resolve_target(store: Store, given: str, *, customers: bool = False) -> ActionTarget:
    """Find what ``given`` names: an alert id, an ``in_…`` invoice, or (``customers``) a
    ``cus_…`` customer. Unknown alerts exit 2 naming what was looked for; invoices and
    customers not yet mirrored are left for Stripe to confirm."""
    text = given.strip()
    if text.isdigit():
        alert = store.get_alert(int(text))
        if alert is None:
            raise NotFound(
                f"no alert {text} in {store.backend} ({store.location})",
                hint="list them with: cloudgreet-billing alerts list --status all",
            )
        invoice = store.get_invoice(alert.invoice_id) if alert.invoice_id else None
        return ActionTarget(
            given=text,
            alert=alert,
            invoice_id=alert.invoice_id,
            customer_id=alert.customer_id or (invoice.customer_id if invoice else None),
            invoice=invoice,
        )
    if text.startswith("in_"):
        invoice = store.get_invoice(text)
        return ActionTarget(
            given=text,
            alert=_invoice_alert(store, text),
            invoice_id=text,
            customer_id=invoice.customer_id if invoice else None,
            invoice=invoice,
        )
    if customers and text.startswith("cus_"):
        return ActionTarget(
            given=text,
            alert=_first(store, AlertQuery(customer_id=text, types=PAYMENT_ALERTS)),
            invoice_id=None,
            customer_id=text,
            invoice=None,
        )
    kinds = "an alert id (a number), an invoice id (in_…)" + (
        " or a customer id (cus_…)" if customers else ""
    )
    raise BadInput(f"{given!r} is not {kinds}", hint="see: cloudgreet-billing alerts list")


#: Alerts about a payment, which these actions act on and a payment settles.
PAYMENT_ALERTS = ("invoice_failed", "payment_action_required")


def _first(store: Store, query: AlertQuery) -> Alert | None:
    found = store.list_alerts(replace(query, statuses=UNRESOLVED_STATUSES, limit=None))
    return found[0] if found else None


def _invoice_alert(store: Store, invoice_id: str) -> Alert | None:
    """The invoice's unresolved failure alert, else its unresolved action alert."""
    for alert_type in PAYMENT_ALERTS:
        alert = _first(store, AlertQuery(invoice_id=invoice_id, types=(alert_type,)))
        if alert is not None:
            return alert
    return None


def require_invoice(target: ActionTarget, command: str) -> str:
    if target.invoice_id is None:
        kind = target.alert.type if target.alert else "this"
        raise BadInput(
            f"alert {target.given} ({kind}) has no invoice to {command}",
            hint="give the invoice id (in_…) instead",
        )
    return target.invoice_id


def mode_of(gateway: PaymentGateway | None) -> str | None:
    return None if gateway is None else gateway.mode


def require_gateway(gateway: PaymentGateway | None, safety: Safety) -> None:
    """Only a dry run may go without Stripe (it then judges the local mirror)."""
    if gateway is None and not safety.dry_run:
        raise ConfigError(
            "STRIPE_SECRET_KEY is not set",
            hint="set STRIPE_SECRET_KEY in the environment or in .env (see .env.example), "
            "or try it first with --dry-run",
        )


def fetch_invoice(gateway: PaymentGateway, invoice_id: str) -> MirroredInvoice:
    """The invoice as Stripe has it now; a missing one exits 2 naming it.

    Only Stripe's ``resource_missing`` means the invoice does not exist: a 404 without it
    is an unknown route, which the gateway already reports as a configuration error."""
    try:
        return parse_invoice(gateway.retrieve_invoice(invoice_id))
    except StripeRequestFailed as error:
        if error.stripe_code == "resource_missing":
            raise NotFound(
                f"no invoice {invoice_id} in Stripe ({gateway.mode} mode)",
                hint="check the id, and that STRIPE_SECRET_KEY is for the right account and mode",
            ) from None
        raise


def show_banner(gateway: PaymentGateway | None, safety: Safety, *, account: bool = True) -> Banner:
    """Show (and return) the banner: the mode and, with ``account``, whose account the key
    opens; with no key, that a dry run judges the mirror."""
    if gateway is None:
        banner = Banner(mode=None, dry_run=True)
    elif account:
        banner = replace(account_banner(gateway), dry_run=safety.dry_run)
    else:
        banner = Banner(mode=gateway.mode, dry_run=safety.dry_run)
    safety.show_banner(banner)
    return banner


def judge_invoice(
    gateway: PaymentGateway | None, target: ActionTarget, invoice_id: str
) -> tuple[MirroredInvoice, str]:
    """The invoice the action's checks judge, and where it came from: Stripe's copy now
    when there is a key (in a dry run too), else the local mirror's."""
    if gateway is not None:
        return fetch_invoice(gateway, invoice_id), FROM_STRIPE
    if target.invoice is None:
        raise NotFound(
            f"invoice {invoice_id} is not in the local mirror, and with no STRIPE_SECRET_KEY "
            "a dry run cannot ask Stripe",
            hint="set STRIPE_SECRET_KEY, or run `cloudgreet-billing sync` first",
        )
    return target.invoice, FROM_MIRROR


def refuse_status(
    story: AuditStory, invoice_id: str, status: str, why: str, hint: str | None = None
) -> NoReturn:
    """Exit 2 for an invoice whose status rules the action out, in every action alike:
    the operator named something the action cannot apply to (``why`` follows the id)."""
    story.record("refused", reason=f"invoice is {status}", status=status)
    raise BadInput(
        f"invoice {invoice_id} {why}",
        hint,
        code="invoice_not_actionable",
        invoice_id=invoice_id,
        status=status,
    )


def account_banner(gateway: PaymentGateway) -> Banner:
    """The mode and the account the key belongs to (a restricted key that may not read the
    account still shows its mode)."""
    try:
        account = gateway.retrieve_account()
    except StripeRequestFailed:
        return Banner(mode=gateway.mode)
    except BillingError as error:
        if error.code == "stripe_permission":
            return Banner(mode=gateway.mode)
        raise
    return Banner(
        mode=gateway.mode, account_id=account.get("id"), account_name=account_name(account)
    )


def account_name(account: StripeObject) -> str | None:
    """The name people know the account by."""
    settings = account.get("settings") or {}
    dashboard = settings.get("dashboard") or {}
    profile = account.get("business_profile") or {}
    return dashboard.get("display_name") or profile.get("name") or account.get("email")


@dataclass
class AuditStory:
    """The audit lines of one action on one target.

    ``told()`` wraps everything after the gate: an error that ends the action without an
    outcome line (Stripe unreachable, an unexpected failure, Ctrl-C mid-call) gets one, so
    no intent line is ever left without its outcome.
    """

    store: Store
    actor: str
    action: str
    target: str
    clock: Callable[[], datetime]
    base: Mapping[str, Any] = field(default_factory=dict)
    finished: bool = False

    @classmethod
    def of(
        cls,
        store: Store,
        actor: str,
        action: str,
        target: str,
        safety: Safety,
        base: Mapping[str, Any],
    ) -> AuditStory:
        """The story of one run; every line of a dry run says ``dry_run``."""
        dry = {"dry_run": True} if safety.dry_run else {}
        return cls(store, actor, action, target, safety.clock, base={**base, **dry})

    def draft(
        self, outcome: str, *, idempotency_key: str | None = None, **details: Any
    ) -> AuditDraft:
        """An outcome line to write with the state it describes; the story ends with it."""
        if outcome != "intent":
            self.finished = True
        return AuditDraft(
            actor=self.actor,
            action=self.action,
            target=self.target,
            outcome=outcome,
            idempotency_key=idempotency_key,
            details={**self.base, **{k: v for k, v in details.items() if v is not None}},
        )

    def record(self, outcome: str, *, idempotency_key: str | None = None, **details: Any) -> None:
        self.store.append_audit(
            self.draft(outcome, idempotency_key=idempotency_key, **details), self.clock()
        )

    @contextmanager
    def told(self, idempotency_key: Callable[[], str | None] = lambda: None) -> Iterator[None]:
        try:
            yield
        except BillingError as error:
            if not self.finished:
                outcome = "unavailable" if error.exit_code == ExitCode.UNAVAILABLE else "failed"
                details = {k: v for k, v in error.details.items() if _scalar(v)}
                self.record(
                    outcome,
                    idempotency_key=idempotency_key(),
                    **details,
                    error_code=error.code,
                    error=error.message,
                )
            raise
        except KeyboardInterrupt:
            if not self.finished:
                self.record("interrupted", idempotency_key=idempotency_key())
            raise
        except Exception as error:
            if not self.finished:
                self.record(
                    "failed",
                    idempotency_key=idempotency_key(),
                    error_code="internal",
                    error=f"{type(error).__name__}: {error}",
                )
            raise


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def refuse_unconfirmed(
    story: AuditStory,
    safety: Safety,
    what: str,
    *,
    hint: str = "re-run with --yes, or first with --dry-run to see the exact request",
) -> None:
    """Exit 3 before any request when nobody can confirm."""
    if safety.can_confirm:
        return
    story.record("refused", reason="not interactive and no --yes")
    raise Refused(f"{what}; not running without confirmation (no terminal to ask on)", hint=hint)


def ask(
    story: AuditStory,
    safety: Safety,
    request: ConfirmRequest,
    *,
    nothing: str = "nothing was sent",
) -> None:
    """Ask on the TTY unless ``--yes``; a "no" exits 3 and is audited. ``nothing`` says
    what a "no" left undone."""
    if safety.assume_yes:
        safety.announce(request)
        return
    if not safety.confirm(request):
        story.record("declined_at_prompt")
        raise Refused(f"{request.action} canceled at the prompt; {nothing}")


def confirmation(
    action: str,
    question: str,
    *,
    store: Store,
    gateway: PaymentGateway,
    banner: Banner,
    customer_id: str,
    invoice: MirroredInvoice | None,
    invoice_id: str | None = None,
) -> ConfirmRequest:
    """What the operator confirms for an action on a customer and, where there is one,
    their invoice: the amount shown is what is still owed."""
    return ConfirmRequest(
        action=action,
        question=question,
        mode=gateway.mode,
        customer_id=customer_id,
        customer_label=customer_label(store, customer_id, invoice),
        invoice_id=invoice_id or (invoice.id if invoice else None),
        amount=invoice.amount_owed if invoice else None,
        currency=invoice.currency if invoice else None,
        account_id=banner.account_id,
    )


def customer_label(
    store: Store, customer_id: str, invoice: MirroredInvoice | None = None
) -> str | None:
    """``Name · email`` for prompts, from the mirror (or the invoice's copy of them)."""
    customer = store.get_customer(customer_id)
    raw = invoice.raw if invoice is not None else {}
    email = (customer.email if customer else None) or raw.get("customer_email")
    name = (customer.name if customer else None) or raw.get("customer_name")
    return " · ".join(part for part in (name, email) if part) or None
