"""``PaymentGateway`` on the real Stripe SDK: the only module that imports ``stripe``.

- One ``stripe.StripeClient`` per gateway, pinned to ``API_VERSION`` (the version these
  parsers were written against), pointed at ``STRIPE_API_BASE`` when set.
- The SDK retries connection errors, 409s and 5xx ``NETWORK_RETRIES`` times, with our
  back-off and timeouts. It does not retry a plain 429 (Stripe's rate limit), so ``_call``
  backs off and retries it, reusing the same idempotency key for POSTs.
- Every Stripe error leaves as a ``BillingError`` with the contract's exit code (``_translate``).
- Objects leave as plain JSON dictionaries in Stripe's shape.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from cloudgreet_billing.adapters.payments import (
    PaymentDeclined,
    StripeObject,
    StripeRequestFailed,
)
from cloudgreet_billing.config import redact
from cloudgreet_billing.errors import BillingError, ExitCode, Unavailable

if TYPE_CHECKING:
    import stripe

_T = TypeVar("_T")

#: The API version this adapter and ``domain.mirror`` were written against.
API_VERSION: Final = "2026-10-28.endive"
#: Retries the SDK makes on connection errors, 409 and 5xx answers.
NETWORK_RETRIES: Final = 2
#: Retries we make on 429 (rate limited), which the SDK leaves to us.
RATE_LIMIT_RETRIES: Final = 4
#: First back-off delay in seconds, doubled each retry (with jitter), capped at MAX_DELAY.
RETRY_BASE_DELAY = 0.5
MAX_DELAY: Final = 8.0
CONNECT_TIMEOUT: Final = 10.0
READ_TIMEOUT: Final = 40.0
PAGE_SIZE: Final = 100
#: What subscription listings expand: the discounts on the subscription and on its items.
SUBSCRIPTION_EXPAND: Final = ("data.discounts", "data.items.data.discounts")

#: Stripe codes that mean "the customer must act" rather than "the request was wrong".
_DECLINE_CODES: Final = frozenset(
    {"card_declined", "invoice_payment_intent_requires_action", "authentication_required"}
)


def backoff_delay(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1-based): exponential, jittered."""
    # An int power of two is typed Any (a negative exponent would make it a float).
    ceiling: float = min(RETRY_BASE_DELAY * (2 ** (retry - 1)), MAX_DELAY)
    return ceiling * (0.5 + random.random() / 2)


def _http_client() -> stripe.HTTPClient:
    import stripe

    class BackoffRequestsClient(stripe.RequestsClient):
        """The SDK's requests client with our timeouts and back-off between its retries."""

        def _sleep_time_seconds(self, num_retries: int) -> float:
            return backoff_delay(num_retries)

    return BackoffRequestsClient(timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))


def _plain(obj: stripe.StripeObject) -> dict[str, Any]:
    """A StripeObject as the plain JSON dictionary Stripe sent."""
    return obj.to_dict(recursive=True, for_json=True)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


class StripeGateway:
    """Stripe through ``StripeClient``; see the module doc for retries and errors."""

    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str | None = None,
        network_retries: int = NETWORK_RETRIES,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import stripe

        self.mode = "live" if "_live_" in secret_key else "test"
        self._key_shown = redact(secret_key)
        self._api_base = api_base or stripe.DEFAULT_API_BASE
        self._rate_limit_retries = rate_limit_retries
        self._sleep = sleep
        self._client = stripe.StripeClient(
            secret_key,
            stripe_version=API_VERSION,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=network_retries,
            http_client=_http_client(),
        )

    # --- the one place that talks to the SDK ---------------------------------------
    def _call(self, what: str, request: Callable[[], _T]) -> _T:
        """Run one SDK request: retry 429s with back-off, translate every error."""
        import stripe

        retry = 0
        while True:
            try:
                return request()
            except stripe.RateLimitError as exc:
                retry += 1
                if retry > self._rate_limit_retries:
                    raise Unavailable(
                        f"Stripe kept rate-limiting {what} after {retry - 1} retries",
                        hint="wait a minute and run it again",
                        code="stripe_rate_limited",
                    ) from exc
                self._sleep(backoff_delay(retry))
            except stripe.StripeError as exc:
                raise _translate(exc, what, self._key_shown, self._api_base) from exc

    def _pages(
        self,
        what: str,
        list_page: Callable[[Any], stripe.ListObject[Any]],
        params: dict[str, Any],
    ) -> Iterator[dict[str, Any]]:
        """Every object of a list endpoint, in Stripe's order, 100 per page.

        ``list_page`` is a service's ``list``; its params are a TypedDict per endpoint,
        given here as the plain dictionary they describe."""
        query = {**params, "limit": PAGE_SIZE}
        while True:
            page = self._call(what, functools.partial(list_page, query))
            items = page.data
            for item in items:
                yield _plain(item)
            if not page.has_more or not items:
                return
            query = {**query, "starting_after": items[-1].id}

    # --- reading -------------------------------------------------------------------
    def retrieve_account(self) -> StripeObject:
        return _plain(self._call("retrieve the account", self._client.v1.accounts.retrieve_current))

    def retrieve_invoice(self, invoice_id: str) -> StripeObject:
        return _plain(
            self._call(
                f"retrieve invoice {invoice_id}",
                lambda: self._client.v1.invoices.retrieve(invoice_id),
            )
        )

    def retrieve_customer(self, customer_id: str) -> StripeObject:
        return _plain(
            self._call(
                f"retrieve customer {customer_id}",
                lambda: self._client.v1.customers.retrieve(customer_id),
            )
        )

    def list_events(self, *, created_after: datetime | None = None) -> Iterator[StripeObject]:
        """Events oldest first, every page.

        ``created_after`` is inclusive (``created[gte]``): events sharing the cursor's second
        are not missed, and the processed-events table drops the ones already applied.
        Stripe lists newest first, so the window is read whole and then replayed in order.
        """
        params: dict[str, Any] = {}
        if created_after is not None:
            params["created"] = {"gte": _unix(created_after)}
        newest_first = list(self._pages("list events", self._client.v1.events.list, params))
        # Stripe's order within one second is newest first too, so reversing is exact.
        return iter(reversed(newest_first))

    def list_invoices(
        self, *, created_gte: datetime | None = None, created_lt: datetime | None = None
    ) -> Iterator[StripeObject]:
        created: dict[str, int] = {}
        if created_gte is not None:
            created["gte"] = _unix(created_gte)
        if created_lt is not None:
            created["lt"] = _unix(created_lt)
        params: dict[str, Any] = {"created": created} if created else {}
        return self._pages("list invoices", self._client.v1.invoices.list, params)

    def list_subscriptions(self) -> Iterator[StripeObject]:
        # Expanded discounts, so MRR can apply their coupons (events send only their ids).
        params = {"status": "all", "expand": list(SUBSCRIPTION_EXPAND)}
        return self._pages("list subscriptions", self._client.v1.subscriptions.list, params)

    def list_customers(self) -> Iterator[StripeObject]:
        # GET /v1/customers: newest first; a deleted customer is no longer listed.
        return self._pages("list customers", self._client.v1.customers.list, {})

    # --- acting ----------------------------------------------------------------------
    def pay_invoice(self, invoice_id: str, *, idempotency_key: str) -> StripeObject:
        options: Any = {"idempotency_key": idempotency_key}
        return _plain(
            self._call(
                f"pay invoice {invoice_id}",
                lambda: self._client.v1.invoices.pay(invoice_id, options=options),
            )
        )

    def send_invoice(self, invoice_id: str, *, idempotency_key: str) -> StripeObject:
        options: Any = {"idempotency_key": idempotency_key}
        return _plain(
            self._call(
                f"send invoice {invoice_id}",
                lambda: self._client.v1.invoices.send_invoice(invoice_id, options=options),
            )
        )

    def create_portal_session(
        self, customer_id: str, *, return_url: str, idempotency_key: str | None = None
    ) -> StripeObject:
        # A key fixed before the first attempt, so a 429 retry cannot create a second session.
        options: Any = {"idempotency_key": idempotency_key or f"portal-{uuid.uuid4()}"}
        params: Any = {"customer": customer_id, "return_url": return_url}
        return _plain(
            self._call(
                f"create a portal session for {customer_id}",
                lambda: self._client.v1.billing_portal.sessions.create(params, options=options),
            )
        )


def _translate(exc: Exception, what: str, key_shown: str, api_base: str) -> BillingError:
    """One Stripe error as the contract's error (see ``adapters.payments``)."""
    import stripe

    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    status = getattr(exc, "http_status", None)
    code = getattr(exc, "code", None)
    if isinstance(exc, stripe.AuthenticationError):
        return BillingError(
            f"Stripe rejected the API key {key_shown} ({what})",
            hint="check STRIPE_SECRET_KEY: it may be revoked, mistyped or for another account",
            code="stripe_auth",
            exit_code=ExitCode.FAILED,
        )
    if isinstance(exc, stripe.PermissionError):
        return BillingError(
            f"the Stripe key {key_shown} may not {what}: {message}",
            hint="give the restricted key this permission, or use a secret key",
            code="stripe_permission",
            exit_code=ExitCode.FAILED,
        )
    if isinstance(exc, stripe.APIConnectionError):
        return Unavailable(
            f"cannot reach Stripe at {api_base} to {what}",
            hint="check the network (and STRIPE_API_BASE if set); retry later",
            code="stripe_unavailable",
        )
    if status is not None and status >= 500:
        return Unavailable(
            f"Stripe failed to {what} (HTTP {status}) after retries: {message}",
            hint="Stripe may be having an incident (status.stripe.com); retry later",
            code="stripe_unavailable",
        )
    error = getattr(exc, "error", None)
    decline_code = getattr(error, "decline_code", None) if error is not None else None
    if isinstance(exc, stripe.CardError) or code in _DECLINE_CODES:
        return PaymentDeclined(
            f"Stripe declined to {what}: {message}",
            decline_code=decline_code,
            stripe_code=code,
        )
    return StripeRequestFailed(
        f"Stripe refused to {what}: {message}", stripe_code=code, http_status=status
    )


def verify_webhook(payload: bytes, signature: str | None, secrets: tuple[str, ...]) -> bool:
    """Whether ``payload`` is signed by any of ``secrets`` within Stripe's 300 s tolerance,
    by the SDK's own rules (several secrets during a rotation)."""
    import stripe

    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature, secret, stripe.Webhook.DEFAULT_TOLERANCE
            )
        except stripe.SignatureVerificationError:
            continue
        return True
    return False
