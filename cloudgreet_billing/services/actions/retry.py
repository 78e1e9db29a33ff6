"""``retry``: charge an invoice now (``invoices.pay``), once, whatever happens around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from cloudgreet_billing.adapters.payments import (
    PaymentDeclined,
    PaymentGateway,
    RequestPreview,
    StripeObject,
    StripeRequestFailed,
)
from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.config import DEFAULT_RETRY_RACE_WINDOW, duration_text
from cloudgreet_billing.domain.declines import classify_decline
from cloudgreet_billing.domain.dunning import PAUSE_SETTING, PauseState
from cloudgreet_billing.domain.events import InvoiceFailure
from cloudgreet_billing.domain.failed_payment import Decline, decline_code_of
from cloudgreet_billing.domain.mirror import MirroredInvoice, parse_invoice
from cloudgreet_billing.domain.retry_rules import (
    card_to_charge,
    hard_decline_on_same_card,
    in_words,
    stripe_retries_soon,
)
from cloudgreet_billing.domain.timefmt import human_time, iso_z
from cloudgreet_billing.errors import BillingError, ExitCode, Refused, Unavailable
from cloudgreet_billing.services.actions.common import (
    FROM_STRIPE,
    ActionTarget,
    AuditStory,
    Banner,
    Safety,
    ask,
    confirmation,
    fetch_invoice,
    judge_invoice,
    mode_of,
    refuse_status,
    refuse_unconfirmed,
    request_json,
    require_gateway,
    require_invoice,
    resolve_target,
    show_banner,
)

ACTION: Final = "retry"
#: Outcomes after which Stripe would replay the same answer for the same key.
_FAILED_ATTEMPTS: Final = ("declined", "requires_action")
#: Statuses ``invoices.pay`` can collect.
_PAYABLE: Final = ("open", "uncollectible")
#: Why an invoice that is neither payable nor paid cannot be retried, and the fix.
_WHY_NOT: Final = {
    "draft": (
        "is a draft, not yet finalized: there is nothing to charge yet",
        "finalize it in the Stripe dashboard first",
    ),
    "void": ("is void: there is nothing to charge", None),
}


@dataclass(frozen=True)
class RetryResult:
    """What a retry did; ``as_json`` is the contract's shape plus ``outcome`` and ``amount``."""

    invoice_id: str
    customer_id: str
    status: str
    amount_due: int
    amount_paid: int
    currency: str
    alert_id: int | None
    alert_status: str | None
    #: ``paid``, ``already_paid``, ``submitted`` (Stripe has not confirmed the payment
    #: yet) or ``dry_run``; a decline is an error whose details say ``declined`` or
    #: ``requires_action``.
    outcome: str
    #: What this retry charged, or would charge: what was owed when it ran (0 when the
    #: invoice was already paid), in minor units of ``currency``.
    amount: int = 0
    idempotency_key: str | None = None
    request: RequestPreview | None = None
    resolved_alert_ids: tuple[int, ...] = ()
    canceled_steps: int = 0
    paused: bool = False
    dry_run: bool = False
    #: Where the checks read the invoice: ``stripe``, or ``mirror`` in a dry run with no key.
    source: str = FROM_STRIPE
    #: When Stripe charges the invoice itself next (``next_payment_attempt``), if it will.
    stripe_retries_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "status": self.status,
            "amount_paid": self.amount_paid,
            "currency": self.currency,
            "alert_id": self.alert_id,
            "alert_status": self.alert_status,
            "decline_code": None,
            "outcome": self.outcome,
            "amount": self.amount,
            # What the race check saw, for a dry run to show (``stripe_retries_soon``).
            **({"stripe_retries_at": iso_z(self.stripe_retries_at)} if self.dry_run else {}),
        }


def retry_key(invoice_id: str, attempt_count: int, failed_here: int = 0) -> str:
    """The idempotency key of a charge: the invoice and Stripe's ``attempt_count``.

    Stripe counts only the first manual attempt, so ``failed_here`` (our own attempts at
    this count that Stripe answered with a refusal it would replay) keeps a retry after the
    customer fixed the card from being answered with the old decline. Concurrent runs read
    the same counts, so they send the same key and Stripe charges once.
    """
    key = f"cloudgreet-billing:retry:{invoice_id}:attempt-{attempt_count}"
    return key if failed_here == 0 else f"{key}.{failed_here}"


def _failed_here(store: Store, invoice_id: str, attempt_count: int) -> int:
    """Our attempts at this count whose answer Stripe keeps under their key: declines, and
    5xx answers (Stripe saves those too and replays them for 24 hours,
    https://docs.stripe.com/api/idempotent_requests). A timeout got no answer, so its key
    is reused: Stripe then replays what it did, or does it once."""
    return sum(
        1
        for line in store.action_audit(invoice_id, ACTION)
        if line.details.get("attempt_count") == attempt_count
        and not line.details.get("dry_run")
        and (
            line.outcome in _FAILED_ATTEMPTS
            or (line.outcome == "unavailable" and (line.details.get("http_status") or 0) >= 500)
        )
    )


def pay_request(invoice_id: str, key: str) -> RequestPreview:
    return RequestPreview("POST", f"/v1/invoices/{invoice_id}/pay", {}, key)


def retry_payment(
    store: Store,
    gateway: PaymentGateway | None,
    given: str,
    *,
    safety: Safety,
    actor: str,
    force: bool = False,
    race_window: timedelta = DEFAULT_RETRY_RACE_WINDOW,
) -> RetryResult:
    """Charge the invoice behind ``given`` (alert id or ``in_…``) now.

    Raises ``BillingError``: a decline or a needed authentication exits 1 with the retry's
    fields in its details; dunning paused without ``force`` exits 75; an invoice that is
    not payable 2; no confirmation 3. Without ``force``, a hard decline whose card has not
    changed exits 3, and so does a charge Stripe will make itself within ``race_window``
    unless the operator says yes at the terminal (``domain.retry_rules``). A dry run
    (``gateway`` None: no key, judge the mirror) raises the same errors and returns the
    request instead of sending it.
    """
    target = resolve_target(store, given)
    invoice_id = require_invoice(target, "retry")
    require_gateway(gateway, safety)
    story = AuditStory.of(
        store,
        actor,
        ACTION,
        invoice_id,
        safety,
        base={"mode": mode_of(gateway), "alert_id": target.alert_id, "given": target.given},
    )
    pause = PauseState.from_setting(store.get_setting(PAUSE_SETTING))
    if pause.paused and not force:
        story.record("refused", reason="dunning paused", pause_reason=pause.reason)
        raise Unavailable(
            f"dunning is paused ({pause.reason or 'no reason given'}"
            f"{f', by {pause.actor}' if pause.actor else ''}); not charging {invoice_id}",
            hint="wait for `cloudgreet-billing dunning resume`, or pass --force if this "
            "charge must go now",
            code="dunning_paused",
        )
    refuse_unconfirmed(story, safety, f"retry charges the customer for invoice {invoice_id}")
    key: str | None = None
    with story.told(lambda: key):
        banner = show_banner(gateway, safety)
        invoice, source = judge_invoice(gateway, target, invoice_id)
        if invoice.status == "paid":
            if safety.dry_run:
                story.record("dry_run", status="paid", source=source)
                return replace(
                    _result(target, invoice, "already_paid", key=None, amount=0),
                    dry_run=True,
                    source=source,
                    paused=pause.paused,
                )
            return _settle(store, story, target, invoice, "already_paid", key=None)
        if invoice.status not in _PAYABLE:
            why, fix = _WHY_NOT.get(
                invoice.status,
                (
                    f"is {invoice.status}: there is nothing to charge",
                    "only open or uncollectible invoices can be paid",
                ),
            )
            refuse_status(story, invoice_id, invoice.status, why, fix)
        if not force:
            _refuse_hard_decline(store, gateway, story, target, invoice)
            _wait_for_stripe(store, gateway, story, safety, target, invoice, race_window, banner)
        attempt_count = invoice.attempt_count
        key = retry_key(invoice_id, attempt_count, _failed_here(store, invoice_id, attempt_count))
        story.base = {**story.base, "attempt_count": attempt_count}
        if safety.dry_run:
            preview = pay_request(invoice_id, key)
            story.record(
                "dry_run", idempotency_key=key, request=request_json(preview), source=source
            )
            return replace(
                _result(target, invoice, "dry_run", key=key),
                request=preview,
                paused=pause.paused,
                dry_run=True,
                source=source,
                stripe_retries_at=invoice.next_payment_attempt,
            )
        assert gateway is not None
        ask(
            story,
            safety,
            confirmation(
                "retry",
                f"Charge {invoice.customer_id} for invoice {invoice_id} now?",
                store=store,
                gateway=gateway,
                banner=banner,
                customer_id=invoice.customer_id,
                invoice=invoice,
            ),
        )
        story.record(
            "intent",
            idempotency_key=key,
            amount_due=invoice.amount_owed,
            currency=invoice.currency,
            customer_id=invoice.customer_id,
            request=request_json(pay_request(invoice_id, key)),
        )
        try:
            answer = parse_invoice(gateway.pay_invoice(invoice_id, idempotency_key=key))
        except PaymentDeclined as declined:
            raise _declined(store, story, target, invoice, declined, key) from None
        except Unavailable as unknown:
            unknown.hint = (
                "Stripe may or may not have charged it; running the same retry again is "
                "safe: it reads the invoice first, and Stripe charges one key once"
            )
            raise
        except StripeRequestFailed as refused:
            # Paid meanwhile (by the customer, or a concurrent run): Stripe refuses to pay
            # a paid invoice, and that is the outcome the operator wanted.
            now_state = fetch_invoice(gateway, invoice_id)
            if now_state.status == "paid":
                return _settle(
                    store, story, target, now_state, "already_paid", key=key, stripe=refused.message
                )
            raise
        if answer.status == "paid":
            return _settle(
                store, story, target, answer, "paid", key=key, amount=invoice.amount_owed
            )
        store.upsert_invoice(answer, safety.clock(), safety.clock())
        story.record(
            "submitted",
            idempotency_key=key,
            status=answer.status,
            amount_paid=answer.amount_paid,
        )
        return _result(target, answer, "submitted", key=key, amount=invoice.amount_owed)


def _refusal_fields(
    target: ActionTarget, invoice: MirroredInvoice, **judged: Any
) -> dict[str, Any]:
    """The contract's retry fields for a refusal's ``--json`` error, and what it judged."""
    mirrored = target.invoice
    return {
        "invoice_id": target.invoice_id or invoice.id,
        "status": invoice.status,
        "amount_paid": invoice.amount_paid,
        "currency": invoice.currency,
        "alert_id": target.alert_id,
        "alert_status": target.alert.status if target.alert else None,
        "decline_code": None if mirrored is None else mirrored.last_decline_code,
        "outcome": "refused",
        "amount": invoice.amount_owed,
        **judged,
    }


def _card_now(store: Store, gateway: PaymentGateway | None, invoice: MirroredInvoice) -> str | None:
    """The card a charge of ``invoice`` would use now: read from Stripe when there is a
    key (the invoice is Stripe's already), else from the mirror."""
    subscription: Any = None
    customer: Any = None
    if gateway is not None:
        if invoice.subscription_id is not None:
            subscription_id = invoice.subscription_id
            subscription = _unless_missing(lambda: gateway.retrieve_subscription(subscription_id))
        customer = _unless_missing(lambda: gateway.retrieve_customer(invoice.customer_id))
    else:
        mirrored = (
            store.get_subscription(invoice.subscription_id) if invoice.subscription_id else None
        )
        subscription = None if mirrored is None else mirrored.raw
        known = store.get_customer(invoice.customer_id)
        # The mirror's column, which the merge keeps with the customer row it shows.
        customer = (
            None
            if known is None
            else {"invoice_settings": {"default_payment_method": known.default_payment_method}}
        )
    return card_to_charge(invoice.raw, subscription, customer)


def _unless_missing(read: Callable[[], StripeObject]) -> StripeObject | None:
    """An object Stripe no longer has (``resource_missing``: a deleted customer or
    subscription) names no card: None, which counts as unknown."""
    try:
        return read()
    except StripeRequestFailed as error:
        if error.stripe_code == "resource_missing":
            return None
        raise


def _refuse_hard_decline(
    store: Store,
    gateway: PaymentGateway | None,
    story: AuditStory,
    target: ActionTarget,
    invoice: MirroredInvoice,
) -> None:
    """Exit 3 for a hard decline whose card has not changed: charging it again cannot
    succeed and counts against the account with the card networks. The decline is the
    mirror's (the last failure's, ``domain.merge``); the card is Stripe's now."""
    mirrored = target.invoice
    if mirrored is None:
        return
    decline, advice = mirrored.last_decline_code, mirrored.last_advice_code
    # Only a hard decline needs the card read (and its Stripe calls made).
    if classify_decline(decline, advice) != "hard":
        return
    refusal = hard_decline_on_same_card(
        decline, advice, mirrored.last_failure_payment_method, _card_now(store, gateway, invoice)
    )
    if refusal is None:
        return
    invoice_id = target.invoice_id or invoice.id
    story.record(
        "refused",
        reason="hard decline, card unchanged",
        decline_code=refusal.decline_code,
        advice_code=refusal.advice_code,
        failed_payment_method=refusal.failed_payment_method,
        payment_method=refusal.payment_method,
    )
    raise Refused(
        f"invoice {invoice_id} was declined with {refusal.reason}, a hard decline, and "
        f"{refusal.why_unchanged}: charging it again cannot succeed and counts against "
        "the account with the card networks",
        hint=f"send the customer the portal link to add a new card: cloudgreet-billing "
        f"portal {invoice_id} --send (or pass --force to charge the same card anyway)",
        code="hard_decline",
        **_refusal_fields(
            target,
            invoice,
            decline_code=refusal.decline_code,
            advice_code=refusal.advice_code,
            failed_payment_method=refusal.failed_payment_method,
            payment_method=refusal.payment_method,
        ),
    )


def _wait_for_stripe(
    store: Store,
    gateway: PaymentGateway | None,
    story: AuditStory,
    safety: Safety,
    target: ActionTarget,
    invoice: MirroredInvoice,
    window: timedelta,
    banner: Banner,
) -> None:
    """When Stripe charges the invoice itself within ``window``: ask on a terminal, and
    refuse (exit 3) where nobody can be asked; ``--force`` skips this."""
    now = safety.clock()
    retries_at = invoice.next_payment_attempt
    if retries_at is None or not stripe_retries_soon(retries_at, now, window):
        return
    invoice_id = target.invoice_id or invoice.id
    when = f"{human_time(retries_at)} (in {in_words(retries_at - now)})"
    if safety.interactive and not safety.assume_yes:
        if safety.dry_run:
            return  # the real run asks; a dry run asks nothing
        assert gateway is not None
        request = confirmation(
            "retry",
            f"Stripe charges invoice {invoice_id} itself at {when}. Charge it now anyway?",
            store=store,
            gateway=gateway,
            banner=banner,
            customer_id=invoice.customer_id,
            invoice=invoice,
        )
        if safety.confirm(request):
            story.base = {**story.base, "stripe_retries_at": iso_z(retries_at)}
            return
        story.record("declined_at_prompt", reason="Stripe retries soon")
        raise Refused(f"retry canceled at the prompt; Stripe charges it at {when}")
    story.record("refused", reason="Stripe retries soon", stripe_retries_at=iso_z(retries_at))
    raise Refused(
        f"Stripe charges invoice {invoice_id} itself at {when}, within "
        f"BILLING_RETRY_RACE_WINDOW ({duration_text(window)}); not charging it first",
        hint="let Stripe's retry run, or pass --force to charge now",
        code="stripe_retries_soon",
        **_refusal_fields(target, invoice, stripe_retries_at=iso_z(retries_at)),
    )


def _result(
    target: ActionTarget,
    invoice: MirroredInvoice,
    outcome: str,
    *,
    key: str | None,
    alert_status: str | None = None,
    resolved: tuple[int, ...] = (),
    canceled: int = 0,
    amount: int | None = None,
) -> RetryResult:
    return RetryResult(
        # What the operator named (a test server may answer with another id).
        invoice_id=target.invoice_id or invoice.id,
        customer_id=invoice.customer_id,
        status=invoice.status,
        amount_due=invoice.amount_due,
        amount_paid=invoice.amount_paid,
        currency=invoice.currency,
        alert_id=target.alert_id,
        alert_status=alert_status or (target.alert.status if target.alert else None),
        outcome=outcome,
        amount=invoice.amount_owed if amount is None else amount,
        idempotency_key=key,
        resolved_alert_ids=resolved,
        canceled_steps=canceled,
    )


def _settle(
    store: Store,
    story: AuditStory,
    target: ActionTarget,
    invoice: MirroredInvoice,
    outcome: str,
    *,
    key: str | None,
    stripe: str | None = None,
    amount: int = 0,
) -> RetryResult:
    how = "paid by a manual retry" if outcome == "paid" else "already paid when retried"
    settlement = store.settle_paid_invoice(
        invoice,
        resolution=f"{how} ({story.actor})",
        audit=story.draft(
            outcome,
            idempotency_key=key,
            status=invoice.status,
            amount_paid=invoice.amount_paid,
            currency=invoice.currency,
            stripe_message=stripe,
        ),
        now=story.clock(),
    )
    return _result(
        target,
        invoice,
        outcome,
        key=key,
        alert_status="resolved" if target.alert else None,
        resolved=settlement.resolved_alert_ids,
        canceled=settlement.canceled_steps,
        amount=amount,
    )


def _declined(
    store: Store,
    story: AuditStory,
    target: ActionTarget,
    invoice: MirroredInvoice,
    declined: PaymentDeclined,
    key: str,
) -> BillingError:
    """Record a refused charge and return the error that ends the command (exit 1)."""
    now = story.clock()
    reason = declined.decline_code or declined.stripe_code or "declined"
    fields: dict[str, Any] = {
        "invoice_id": invoice.id,
        "status": invoice.status,
        "amount_paid": invoice.amount_paid,
        "currency": invoice.currency,
        "alert_id": target.alert_id,
        "alert_status": target.alert.status if target.alert else None,
        "decline_code": declined.decline_code,
        "stripe_code": declined.stripe_code,
        "outcome": "requires_action" if declined.requires_action else "declined",
        "amount": invoice.amount_owed,
    }
    audit_details = {
        "attempt_count": invoice.attempt_count,
        "decline_code": declined.decline_code,
        "stripe_code": declined.stripe_code,
        "stripe_message": declined.message,
    }
    if declined.requires_action:
        action_alert = store.open_action_required_alert(
            invoice,
            failure=f"{reason}: {declined.message}",
            note=f"manual retry by {story.actor}: the customer must authenticate the payment",
            audit=story.draft("requires_action", idempotency_key=key, **audit_details),
            now=now,
        )
        link = invoice.hosted_invoice_url
        return BillingError(
            f"invoice {invoice.id} needs the customer to authenticate the payment "
            f"({reason}); alert {action_alert} opened",
            hint=(f"send them the payment page {link}, or run: " if link else "run: ")
            + f"cloudgreet-billing portal {invoice.id} --send",
            code="payment_action_required",
            exit_code=ExitCode.FAILED,
            details={
                **fields,
                "action_alert_id": action_alert,
                "hosted_invoice_url": link,
            },
        )
    decline = Decline(
        decline_code_of(declined.stripe_code, declined.decline_code),
        declined.advice_code,
        declined.payment_method,
    )
    store.record_failed_attempt(
        target.alert_id,
        attempt_count=invoice.attempt_count,
        declined=(invoice.id, InvoiceFailure(reason, declined.message, decline)),
        failure=f"{reason}: {declined.message}",
        note=f"manual retry by {story.actor} declined ({reason}): {declined.message}",
        audit=story.draft("declined", idempotency_key=key, **audit_details),
        now=now,
    )
    where = f"alert {target.alert_id} stays open; " if target.alert_id else ""
    return BillingError(
        f"{declined.message} — decline code {reason}",
        hint=f"{where}ask the customer to update their card: "
        f"cloudgreet-billing portal {target.given} --send",
        code="payment_declined",
        exit_code=ExitCode.FAILED,
        details=fields,
    )
