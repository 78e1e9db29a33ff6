"""``resend-link``: have Stripe email the invoice (``invoices.send_invoice``) again."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from cloudgreet_billing.adapters.payments import PaymentGateway, RequestPreview
from cloudgreet_billing.adapters.store.protocol import AuditRecord, Store
from cloudgreet_billing.domain.mirror import MirroredInvoice, parse_invoice
from cloudgreet_billing.services.actions.common import (
    FROM_STRIPE,
    ActionTarget,
    AuditStory,
    Safety,
    ask,
    confirmation,
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

ACTION: Final = "resend-link"
#: Why an invoice that is neither open nor paid is not resent, and the fix
#: (``{given}``: what the operator typed).
_WHY_NOT: Final = {
    "draft": (
        "is a draft, not yet finalized: Stripe cannot send it",
        "finalize it in the Stripe dashboard first",
    ),
    "void": ("is void: nothing is owed on it", None),
    "uncollectible": (
        "is marked uncollectible, so Stripe will not send it",
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
    #: ``sent``, ``already_sent`` (earlier today, so Stripe would not send again),
    #: ``already_paid`` (nothing to ask for) or ``dry_run``.
    outcome: str
    idempotency_key: str
    request: RequestPreview | None = None
    earlier: AuditRecord | None = None
    dry_run: bool = False
    #: Where the checks read the invoice: ``stripe``, or ``mirror`` in a dry run with no key.
    source: str = FROM_STRIPE

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
            "outcome": self.outcome,
        }


def resend_key(invoice_id: str, today: datetime) -> str:
    """One send per invoice and UTC day: a second run the same day sends nothing more."""
    return f"cloudgreet-billing:resend-link:{invoice_id}:{today:%Y-%m-%d}"


def send_request(invoice_id: str, key: str) -> RequestPreview:
    return RequestPreview("POST", f"/v1/invoices/{invoice_id}/send", {}, key)


def resend_link(
    store: Store,
    gateway: PaymentGateway | None,
    given: str,
    *,
    safety: Safety,
    actor: str,
) -> ResendResult:
    """Ask Stripe to email the invoice behind ``given`` (alert id or ``in_…``) again.

    Only ``open`` invoices are sent: a paid one needs nothing (exit 0), the others are
    refused (exit 2) without calling ``send``. A dry run applies the same checks
    (``gateway`` None: no key, judge the mirror) and returns the request.
    """
    target = resolve_target(store, given)
    invoice_id = require_invoice(target, "resend")
    require_gateway(gateway, safety)
    story = AuditStory.of(
        store,
        actor,
        ACTION,
        invoice_id,
        safety,
        base={"mode": mode_of(gateway), "alert_id": target.alert_id, "given": target.given},
    )
    key = resend_key(invoice_id, safety.clock())
    refuse_unconfirmed(story, safety, f"resend-link emails the customer invoice {invoice_id}")
    with story.told(lambda: key):
        banner = show_banner(gateway, safety)
        invoice, source = judge_invoice(gateway, target, invoice_id)
        dry_run = safety.dry_run
        if invoice.status == "paid":
            story.record("already_paid", status=invoice.status, source=source)
            return replace(
                _result(target, invoice, "already_paid", key, sent=False),
                dry_run=dry_run,
                source=source,
            )
        if invoice.status != "open":
            why, fix = _WHY_NOT.get(invoice.status, (f"is {invoice.status}", None))
            refuse_status(
                story,
                invoice_id,
                invoice.status,
                why,
                fix.format(given=target.given) if fix else None,
            )
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
                _result(target, invoice, "already_sent", key, sent=False),
                earlier=earlier,
                dry_run=dry_run,
                source=source,
            )
        if safety.dry_run:
            preview = send_request(invoice_id, key)
            story.record(
                "dry_run", idempotency_key=key, request=request_json(preview), source=source
            )
            return replace(
                _result(target, invoice, "dry_run", key, sent=False),
                request=preview,
                dry_run=dry_run,
                source=source,
            )
        assert gateway is not None
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
        # What the operator named (a test server may answer with another id).
        invoice_id=target.invoice_id or invoice.id,
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
