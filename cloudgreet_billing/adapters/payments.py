"""The payment gateway port: what services ask of Stripe, in plain Python.

``adapters/stripe.py`` implements it with the real SDK (and is the only module that
imports ``stripe``); unit tests use in-memory fakes. Objects cross this boundary as plain
JSON dictionaries in Stripe's shape, so the domain parsers (``domain.mirror``) read them.
Every failure is raised as a ``BillingError`` with the contract's exit code:
authentication → 1 with a hint, connection errors, 5xx after retries and the command's
deadline passing → 75 (``Unavailable``), a declined card → ``PaymentDeclined`` (1), a
route the server does not know (a wrong ``STRIPE_API_BASE``) → 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cloudgreet_billing.errors import BillingError, ExitCode

StripeObject = Mapping[str, Any]
#: ``on_page(read, reached)``: events read so far, and the ``created`` of the oldest one
#: (Stripe lists newest first, so each page reaches further back).
PagesRead = Callable[[int, datetime], None]


class PaymentDeclined(BillingError):
    """The charge was refused: a card decline, or the payment needs the customer's action."""

    def __init__(
        self,
        message: str,
        *,
        decline_code: str | None,
        stripe_code: str | None,
        hint: str | None = None,
        advice_code: str | None = None,
        payment_method: str | None = None,
    ) -> None:
        super().__init__(
            message,
            hint,
            "payment_declined",
            ExitCode.FAILED,
            {"decline_code": decline_code, "stripe_code": stripe_code},
        )
        self.decline_code = decline_code
        self.stripe_code = stripe_code
        #: The issuer's advice and the card that was declined, where Stripe's error says.
        self.advice_code = advice_code
        self.payment_method = payment_method

    @property
    def requires_action(self) -> bool:
        """The customer must authenticate (3-D Secure): retrying from here cannot succeed."""
        return self.stripe_code in (
            "invoice_payment_intent_requires_action",
            "authentication_required",
        )


class StripeRequestFailed(BillingError):
    """Stripe refused a request for a reason of its own (invalid state, missing object)."""

    def __init__(
        self,
        message: str,
        *,
        stripe_code: str | None,
        http_status: int | None,
        request_id: str | None = None,
    ) -> None:
        details: dict[str, Any] = {"stripe_code": stripe_code, "http_status": http_status}
        if request_id:
            details["request_id"] = request_id
        super().__init__(message, None, "stripe_error", ExitCode.FAILED, details)
        self.stripe_code = stripe_code
        self.http_status = http_status


@dataclass(frozen=True)
class RequestPreview:
    """The exact request a money-moving call would send (``--dry-run``)."""

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


class PaymentGateway(Protocol):
    """Stripe, as the services need it."""

    #: ``test`` or ``live``, from the key's prefix.
    mode: str

    # --- reading -------------------------------------------------------------
    def retrieve_account(self) -> StripeObject: ...

    def retrieve_invoice(self, invoice_id: str) -> StripeObject: ...

    def retrieve_customer(self, customer_id: str) -> StripeObject: ...

    def retrieve_payment_intent(self, payment_intent_id: str) -> StripeObject: ...

    def invoice_of_payment_intent(self, payment_intent_id: str) -> str | None:
        """The invoice a PaymentIntent pays, from its invoice payment; None when it pays none."""
        ...

    def list_events(
        self, *, created_after: datetime | None = None, on_page: PagesRead | None = None
    ) -> Iterator[StripeObject]:
        """Events oldest first, every page; ``on_page`` is told after each page."""
        ...

    def list_invoices(
        self, *, created_gte: datetime | None = None, created_lt: datetime | None = None
    ) -> Iterator[StripeObject]:
        """Invoices in a created window, 100 per page, every page."""
        ...

    def list_subscriptions(self, *, status: str | None = "all") -> Iterator[StripeObject]:
        """Every subscription of ``status`` (``all``; None: every one not canceled), 100
        per page."""
        ...

    def retrieve_subscription(self, subscription_id: str) -> StripeObject: ...

    def list_customers(self) -> Iterator[StripeObject]:
        """Every customer Stripe still has (deleted ones are not listed), 100 per page."""
        ...

    # --- acting (each carries a deterministic idempotency key) --------------------
    def pay_invoice(self, invoice_id: str, *, idempotency_key: str) -> StripeObject: ...

    def send_invoice(self, invoice_id: str, *, idempotency_key: str) -> StripeObject: ...

    def create_portal_session(
        self, customer_id: str, *, return_url: str, idempotency_key: str | None = None
    ) -> StripeObject: ...
