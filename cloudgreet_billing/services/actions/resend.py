"""``resend-link``: have Stripe email the invoice (``invoices.send_invoice``) again."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from cloudgreet_billing.adapters.payments import PaymentGateway, RequestPreview
from cloudgreet_billing.adapters.store.protocol import AuditRecord, Store
from cloudgreet_billing.domain.mirror import MirroredInvoice, parse_invoice
from cloudgreet_billing.errors import NotFound, Refused
from cloudgreet_billing.services.actions.common import (
    ActionTarget,
    AuditStory,
    Banner,
    Safety,
    account_banner,
    ask,
    confirmation,
    fetch_invoice,
    refuse_unconfirmed,
    request_json,
    require_invoice,
    resolve_target,
)

ACTION: Final = "resend-link"
_WHY_NOT: Final = {
    "draft": ("it is a draft, not yet finalized", "finalize it in the Stripe dashboard first"),
    "paid": ("it is already paid: there is nothing to pay", None),
    "void": ("it is void: nothing is owed on it", None),
    "uncollectible": (
        "it is marked uncollectible, so Stripe will not send it",
        "to let the customer pay or fix their card anyway, run: "
        "cloudgreet-billing portal {given} --send",
    ),
}


@dataclass(frozen=True)
class ResendResult:
    invoice_id: str
    customer_id: str
    status: str
    amount_due: int
    currency: str
    hosted_invoice_url: str | None
    alert_id: int | None
    sent: bool
    #: ``sent``, ``already_sent`` (earlier today, so Stripe would not send again) or ``dry_run``.
    outcome: str
    idempotency_key: str
    request: RequestPreview | None = None
    earlier: AuditRecord | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "customer_id": self.customer_id,
            "status": self.status,
            "amount_due": self.amount_due,
            "currency": self.currency,
            "hosted_invoice_url": self.hosted_invoice_url,
            "alert_id": self.alert_id,
            "sent": self.sent,
        }


def resend_key(invoice_id: str, today: datetime) -> str:
    """One send per invoice and UTC day: a second run the same day sends nothing more."""
    return f"cloudgreet-billing:resend-link:{invoice_id}:{today:%Y-%m-%d}"


def send_request(invoice_id: str, key: str) -> RequestPreview:
    return RequestPreview("POST", f"/v1/invoices/{invoice_id}/send", {}, key)


def _refuse_unless_open(story: AuditStory, target: ActionTarget, invoice: MirroredInvoice) -> None:
    if invoice.status == "open":
        return
    why, fix = _WHY_NOT.get(invoice.status, (f"it is {invoice.status}", None))
    story.record("refused", reason=f"invoice is {invoice.status}", status=invoice.status)
    raise Refused(
        f"not resending invoice {invoice.id}: {why}",
        hint=fix.format(given=target.given) if fix else None,
        status=invoice.status,
    )


def resend_link(
    store: Store,
    gateway: PaymentGateway,
    given: str,
    *,
    safety: Safety,
    actor: str,
) -> ResendResult:
    """Ask Stripe to email the invoice behind ``given`` (alert id or ``in_…``) again.

    Only ``open`` invoices are sent; others are refused (exit 3) without calling Stripe.
    """
    target = resolve_target(store, given)
    invoice_id = require_invoice(target, "resend")
    story = AuditStory(
        store,
        actor,
        ACTION,
        invoice_id,
        safety.clock,
        base={"mode": gateway.mode, "alert_id": target.alert_id, "given": target.given},
    )
    key = resend_key(invoice_id, safety.clock())
    if safety.dry_run:
        mirrored = target.invoice
        if mirrored is None:
            raise NotFound(
                f"invoice {invoice_id} is not in the local mirror, and a dry run asks Stripe "
                "nothing",
                hint="run `cloudgreet-billing sync` first, or run without --dry-run "
                "(it asks before sending)",
            )
        safety.show_banner(Banner(mode=gateway.mode, dry_run=True))
        _refuse_unless_open(story, target, mirrored)
        preview = send_request(invoice_id, key)
        story.record("dry_run", idempotency_key=key, request=request_json(preview))
        return replace(_result(target, mirrored, "dry_run", key, sent=False), request=preview)
    refuse_unconfirmed(story, safety, f"resend-link emails the customer invoice {invoice_id}")
    with story.told(lambda: key):
        banner = account_banner(gateway)
        safety.show_banner(banner)
        invoice = fetch_invoice(gateway, invoice_id)
        _refuse_unless_open(story, target, invoice)
        earlier = next(
            (
                line
                for line in reversed(store.action_audit(invoice_id, ACTION))
                if line.outcome == "sent" and line.idempotency_key == key
            ),
            None,
        )
        if earlier is not None:
            story.record("already_sent", idempotency_key=key, earlier_audit_id=earlier.id)
            return replace(
                _result(target, invoice, "already_sent", key, sent=False), earlier=earlier
            )
        ask(
            story,
            safety,
            confirmation(
                "resend-link",
                f"Have Stripe email invoice {invoice_id} to {invoice.customer_id}?",
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
            customer_id=invoice.customer_id,
            amount_due=invoice.amount_owed,
            currency=invoice.currency,
            request=request_json(send_request(invoice_id, key)),
        )
        sent = parse_invoice(gateway.send_invoice(invoice_id, idempotency_key=key))
        now = safety.clock()
        store.upsert_invoice(sent, now, now)
        store.note_alert(
            target.alert_id,
            author=actor,
            body=f"invoice email resent by Stripe at {actor}'s request",
            audit=story.draft("sent", idempotency_key=key, status=sent.status),
            now=now,
        )
        return _result(target, sent, "sent", key, sent=True)


def _result(
    target: ActionTarget, invoice: MirroredInvoice, outcome: str, key: str, *, sent: bool
) -> ResendResult:
    return ResendResult(
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        status=invoice.status,
        amount_due=invoice.amount_due,
        currency=invoice.currency,
        hosted_invoice_url=invoice.hosted_invoice_url,
        alert_id=target.alert_id,
        sent=sent,
        outcome=outcome,
        idempotency_key=key,
    )
