"""``portal``: a Stripe customer-portal link (``billing_portal.sessions.create``), and
with ``--send`` an email carrying it to the customer plus a follow-up note on the alert."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cloudgreet_billing.adapters.notify.protocol import DeliveryError, EmailSender, OutgoingEmail
from cloudgreet_billing.adapters.payments import (
    PaymentGateway,
    RequestPreview,
    StripeObject,
    StripeRequestFailed,
)
from cloudgreet_billing.adapters.store.protocol import AuditRecord, Store
from cloudgreet_billing.domain.mirror import MirroredInvoice
from cloudgreet_billing.errors import BadInput, BillingError, ConfigError, ExitCode, NotFound
from cloudgreet_billing.services.actions.common import (
    FROM_MIRROR,
    FROM_STRIPE,
    ActionTarget,
    AuditStory,
    Safety,
    ask,
    confirmation,
    judge_invoice,
    mode_of,
    refuse_unconfirmed,
    request_json,
    require_gateway,
    resolve_target,
    show_banner,
)

ACTION: Final = "portal"
RETURN_PATH: Final = "/admin/billing"
FOLLOW_UP_NOTE: Final = "portal link sent; follow up in CRM"


@dataclass(frozen=True)
class PortalResult:
    customer_id: str
    url: str | None
    return_url: str
    sent: bool
    #: ``created``, ``sent``, ``already_sent`` (earlier today) or ``dry_run``.
    outcome: str
    alert_id: int | None = None
    email_to: str | None = None
    request: RequestPreview | None = None
    earlier: AuditRecord | None = None
    dry_run: bool = False
    #: Where the checks read the customer: ``stripe``, or ``mirror`` in a dry run with no key.
    source: str = FROM_STRIPE

    def as_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "url": self.url,
            "return_url": self.return_url,
            "sent": self.sent,
            "outcome": self.outcome,
            "email_to": self.email_to,
        }


def return_url_for(app_url: str | None, override: str | None) -> str:
    """``--return-url``, else ``$APP_URL/admin/billing``."""
    if override:
        return override
    if not app_url:
        raise ConfigError(
            "APP_URL is not set, so there is no page to return the customer to",
            hint="set APP_URL (or NEXT_PUBLIC_APP_URL), or pass --return-url",
        )
    return app_url.rstrip("/") + RETURN_PATH


def session_key(customer_id: str, return_url: str, now: datetime) -> str:
    """Runs within the same minute get the same session: a double run makes one link.
    (Portal links are short-lived, so a day-long key would replay an expired one.) The
    return URL is part of the key: Stripe refuses a key reused with other parameters."""
    where = hashlib.sha256(return_url.encode()).hexdigest()[:12]
    return f"cloudgreet-billing:portal:{customer_id}:{now:%Y-%m-%dT%H:%M}:{where}"


def _send_key(customer_id: str, target: ActionTarget, now: datetime) -> str:
    """One emailed link per customer, alert (or invoice) and UTC day."""
    about = target.alert_id or target.invoice_id or "-"
    return f"portal-send:{customer_id}:{about}:{now:%Y-%m-%d}"


def session_request(customer_id: str, return_url: str, key: str) -> RequestPreview:
    return RequestPreview(
        "POST",
        "/v1/billing_portal/sessions",
        {"customer": customer_id, "return_url": return_url},
        key,
    )


def portal_link(
    store: Store,
    gateway: PaymentGateway | None,
    given: str,
    *,
    safety: Safety,
    actor: str,
    app_url: str | None,
    return_url: str | None = None,
    send: bool = False,
    email: EmailSender | None = None,
) -> PortalResult:
    """Make a portal link for the customer behind ``given`` (alert id, ``in_…``, ``cus_…``).

    With ``send`` the link is emailed through ``email`` and the alert gets the note
    ``FOLLOW_UP_NOTE``; that is confirmed like any action reaching a customer. A dry run
    applies the same checks (and with a key reads the customer from Stripe, so a missing
    one exits 2 as the real run would); ``gateway`` None (no key) judges the mirror.
    """
    target = resolve_target(store, given, customers=True)
    back_to = return_url_for(app_url, return_url)
    require_gateway(gateway, safety)
    story = AuditStory.of(
        store,
        actor,
        ACTION,
        target.customer_id or target.given,
        safety,
        base={
            "mode": mode_of(gateway),
            "alert_id": target.alert_id,
            "invoice_id": target.invoice_id,
            "given": target.given,
            "send": send,
            "return_url": back_to,
        },
    )
    now = safety.clock()
    if send:
        refuse_unconfirmed(story, safety, "portal --send emails the customer")
    key: str | None = None
    with story.told(lambda: key):
        banner = show_banner(gateway, safety, account=send)
        customer_id = target.customer_id
        invoice = target.invoice
        source = FROM_STRIPE if gateway is not None else FROM_MIRROR
        if customer_id is None:
            assert target.invoice_id is not None
            invoice, source = judge_invoice(gateway, target, target.invoice_id)
            customer_id = invoice.customer_id
            story.target = customer_id
        key = session_key(customer_id, back_to, now)
        # The real run learns of a missing customer only from the session it creates; a
        # dry run asks Stripe for the customer instead.
        fetched = (
            _stripe_customer(gateway, customer_id)
            if gateway is not None and safety.dry_run
            else None
        )
        email_to: str | None = None
        send_key: str | None = None
        if send:
            email_to = _email_of(store, gateway, customer_id, invoice, fetched)
            send_key = _send_key(customer_id, target, now)
            earlier = next(
                (
                    line
                    for line in reversed(store.action_audit(customer_id, ACTION))
                    if line.outcome == "sent" and line.details.get("send_key") == send_key
                ),
                None,
            )
            if earlier is not None:
                story.record("already_sent", send_key=send_key, earlier_audit_id=earlier.id)
                return PortalResult(
                    customer_id=customer_id,
                    url=None,
                    return_url=back_to,
                    sent=False,
                    outcome="already_sent",
                    alert_id=target.alert_id,
                    email_to=earlier.details.get("email_to"),
                    earlier=earlier,
                    dry_run=safety.dry_run,
                    source=source,
                )
        if safety.dry_run:
            preview = session_request(customer_id, back_to, key)
            story.record(
                "dry_run",
                idempotency_key=key,
                request=request_json(preview),
                email_to=email_to,
                source=source,
            )
            return PortalResult(
                customer_id=customer_id,
                url=None,
                return_url=back_to,
                sent=False,
                outcome="dry_run",
                alert_id=target.alert_id,
                email_to=email_to,
                request=preview,
                dry_run=True,
                source=source,
            )
        assert gateway is not None
        if send:
            assert email_to is not None
            ask(
                story,
                safety,
                confirmation(
                    "portal --send",
                    f"Email a billing-portal link to {email_to}?",
                    store=store,
                    gateway=gateway,
                    banner=banner,
                    customer_id=customer_id,
                    invoice=invoice,
                    invoice_id=target.invoice_id,
                ),
            )
        story.record(
            "intent",
            idempotency_key=key,
            customer_id=customer_id,
            email_to=email_to,
            request=request_json(session_request(customer_id, back_to, key)),
        )
        try:
            session = gateway.create_portal_session(
                customer_id, return_url=back_to, idempotency_key=key
            )
        except StripeRequestFailed as error:
            raise _missing_customer(error, customer_id, gateway) from None
        url = str(session["url"])
        # The URL opens the customer's billing account: it is kept out of the audit log.
        if not send:
            story.record("created", idempotency_key=key, session_id=session.get("id"))
            return PortalResult(customer_id, url, back_to, False, "created", target.alert_id)
        assert email is not None and email_to is not None
        try:
            message_id = email.send(_portal_email(email_to, url, invoice_number(invoice)))
        except DeliveryError as error:
            raise BillingError(
                f"the portal link was made but not emailed to {email_to}: {error}",
                hint="check the email backend (cloudgreet-billing doctor), then run this again",
                code="delivery_failed",
                exit_code=ExitCode.FAILED,
            ) from None
        store.note_alert(
            target.alert_id,
            author=actor,
            body=FOLLOW_UP_NOTE,
            audit=story.draft(
                "sent",
                idempotency_key=key,
                session_id=session.get("id"),
                email_to=email_to,
                email_backend=email.name,
                message_id=message_id,
                send_key=send_key,
            ),
            now=safety.clock(),
        )
        return PortalResult(customer_id, url, back_to, True, "sent", target.alert_id, email_to)


def invoice_number(invoice: Any) -> str | None:
    return None if invoice is None else (invoice.number or invoice.id)


def _email_of(
    store: Store,
    gateway: PaymentGateway | None,
    customer_id: str,
    invoice: MirroredInvoice | None,
    fetched: StripeObject | None = None,
) -> str | None:
    """Where ``--send`` emails the link: the mirrored customer's address, else Stripe's
    (``fetched``, when the customer was already read).

    With no key (a dry run) the mirror is all there is: the invoice's own copy of the
    address stands in, and None means "a real run asks Stripe"."""
    mirrored = store.get_customer(customer_id)
    address = mirrored.email if mirrored else None
    if not address and gateway is None:
        copied = invoice.raw.get("customer_email") if invoice is not None else None
        return str(copied) if copied else None
    if not address:
        assert gateway is not None
        address = (fetched or _stripe_customer(gateway, customer_id)).get("email")
    if not address:
        raise BadInput(
            f"customer {customer_id} has no email address in Stripe",
            hint="add one in the Stripe dashboard, or send the link yourself: run portal "
            "without --send",
            code="no_email",
        )
    return str(address)


def _stripe_customer(gateway: PaymentGateway, customer_id: str) -> StripeObject:
    """The customer as Stripe has it; missing or deleted exits 2 naming it. (Stripe answers
    a deleted customer with ``deleted: true``, https://docs.stripe.com/api/customers/delete.)"""
    try:
        customer = gateway.retrieve_customer(customer_id)
    except StripeRequestFailed as error:
        raise _missing_customer(error, customer_id, gateway) from None
    if customer.get("deleted"):
        raise NotFound(
            f"customer {customer_id} was deleted in Stripe ({gateway.mode} mode)",
            hint="a deleted customer has no portal; check the id",
        )
    return customer


def _missing_customer(
    error: StripeRequestFailed, customer_id: str, gateway: PaymentGateway
) -> BillingError:
    """A customer Stripe does not know exits 2, naming it; other refusals stay as they are."""
    if error.stripe_code == "resource_missing":
        return NotFound(
            f"no customer {customer_id} in Stripe ({gateway.mode} mode)",
            hint="check the id, and that STRIPE_SECRET_KEY is for the right account and mode",
        )
    return error


def _portal_email(to: str, url: str, number: str | None) -> OutgoingEmail:
    about = f" for invoice {number}" if number else ""
    return OutgoingEmail(
        to=to,
        subject="Update your payment details",
        body=(
            f"Hello,\n\nWe could not collect a payment{about}. You can update your card and "
            f"see your invoices here:\n\n{url}\n\nThe link is valid for a short time; reply "
            "to this email if it has expired and we will send a new one.\n\nThank you,\n"
            "CloudGreet billing\n"
        ),
    )
