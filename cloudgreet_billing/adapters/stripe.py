"""``PaymentGateway`` on the real Stripe SDK: the only module that imports ``stripe``.

- One ``stripe.StripeClient`` per gateway, pinned to ``API_VERSION`` (the version these
  parsers were written against), pointed at ``STRIPE_API_BASE`` when set.
- Retries follow stripe-python's own rule (``HTTPClient._should_retry`` in
  ``stripe/_http_client.py``): connection errors and timeouts, 409 and 5xx are retried
  ``NETWORK_RETRIES`` times, and a ``Stripe-Should-Retry`` header overrides the status
  either way (https://docs.stripe.com/error-low-level). A plain 429 carries no such header
  (Stripe sends ``true`` only for lock timeouts, https://docs.stripe.com/rate-limits), so
  the SDK does not retry it: ``_call`` backs off and retries it, reusing the idempotency
  key of a POST, unless Stripe said ``Stripe-Should-Retry: false``.
- Every command has one deadline for all its Stripe calls (``adapters.deadline``): each
  request's timeout shrinks to the time left, and no retry starts after it; then the
  command exits 75.
- Every Stripe error leaves as a ``BillingError`` with the contract's exit code
  (``_translate``, https://docs.stripe.com/api/errors).
- Objects leave as plain JSON dictionaries in Stripe's shape.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from cloudgreet_billing.adapters.deadline import StripeDeadline
from cloudgreet_billing.adapters.payments import (
    PagesRead,
    PaymentDeclined,
    StripeObject,
    StripeRequestFailed,
)
from cloudgreet_billing.config import DEFAULT_STRIPE_TIMEOUT, redact
from cloudgreet_billing.errors import BillingError, ExitCode, Unavailable

if TYPE_CHECKING:
    import stripe

_T = TypeVar("_T")

#: The API version this adapter and ``domain.mirror`` were written against.
API_VERSION: Final = "2026-10-28.endive"
#: Retries the SDK makes on connection errors, timeouts, 409 and 5xx answers.
NETWORK_RETRIES: Final = 2
#: Retries we make on 429 (rate limited), which the SDK leaves to us.
RATE_LIMIT_RETRIES: Final = 4
#: First back-off delay in seconds, doubled each retry (with jitter), capped at MAX_DELAY.
RETRY_BASE_DELAY = 0.5
MAX_DELAY: Final = 8.0
#: Per-request ceilings; the command's deadline cuts them shorter when less time is left.
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


def _http_client(deadline: StripeDeadline) -> stripe.HTTPClient:
    import requests
    import stripe

    class DeadlineRequestsClient(stripe.RequestsClient):
        """The SDK's requests client, held to the command's deadline, with our back-off.

        The SDK decides whether to retry (``_should_retry``); this client only refuses a
        retry that could not start before the deadline, and shrinks each try's timeouts
        to the time left."""

        _next_sleep = 0.0

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            left = deadline.left()
            if left <= 0:
                deadline.expire()
                connection_error: Any = stripe.APIConnectionError
                raise connection_error("the deadline passed before this request")
            connect, read = min(CONNECT_TIMEOUT, left), min(READ_TIMEOUT, left)
            self._timeout = (connect, read)
            try:
                return super().request(method, url, *args, **kwargs)
            except stripe.APIConnectionError as error:
                cause = error.__cause__
                cut_short = (
                    connect < CONNECT_TIMEOUT
                    if isinstance(cause, requests.exceptions.ConnectTimeout)
                    else read < READ_TIMEOUT
                    if isinstance(cause, requests.exceptions.Timeout)
                    else False
                )
                if cut_short:
                    deadline.expire()
                raise

        def _should_retry(
            self,
            response: Any,
            api_connection_error: Any,
            num_retries: int,
            max_network_retries: int | None,
        ) -> bool:
            if deadline.expired or not super()._should_retry(
                response, api_connection_error, num_retries, max_network_retries
            ):
                return False
            self._next_sleep = backoff_delay(num_retries + 1)
            # A retry that could only start after the deadline is not started.
            return self._next_sleep < deadline.left()

        def _sleep_time_seconds(self, num_retries: int) -> float:
            return self._next_sleep

    return DeadlineRequestsClient(timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))


def _plain(obj: stripe.StripeObject) -> dict[str, Any]:
    """A StripeObject as the plain JSON dictionary Stripe sent."""
    return obj.to_dict(recursive=True, for_json=True)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _created(obj: dict[str, Any]) -> datetime:
    """An object's ``created`` (Unix seconds) for progress; the parsers check it properly."""
    created = obj.get("created")
    return datetime.fromtimestamp(created if isinstance(created, int) else 0, UTC)


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
        deadline: StripeDeadline | None = None,
        pages_per_second: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        import stripe

        # A ceiling on list pages per second, for long listings that run beside the live
        # traffic (``sync --verify``): they must leave Stripe's rate limit to the rest.
        self._page_interval = 1 / pages_per_second if pages_per_second else 0.0
        self._monotonic = monotonic
        self._last_page: float | None = None

        self.mode = "live" if "_live_" in secret_key else "test"
        self._key_shown = redact(secret_key)
        self._api_base = api_base or stripe.DEFAULT_API_BASE
        self._rate_limit_retries = rate_limit_retries
        self._sleep = sleep
        self.deadline = deadline or StripeDeadline(DEFAULT_STRIPE_TIMEOUT)
        self._client = stripe.StripeClient(
            secret_key,
            stripe_version=API_VERSION,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=network_retries,
            http_client=_http_client(self.deadline),
        )

    # --- the one place that talks to the SDK ---------------------------------------
    def _call(self, what: str, request: Callable[[], _T]) -> _T:
        """Run one SDK request within the deadline: retry 429s with back-off (unless
        Stripe says not to), translate every error."""
        import stripe

        retry = 0
        with self.deadline.waiting(what):
            while True:
                if self.deadline.expired:
                    raise self._too_slow(what)
                try:
                    return request()
                except stripe.RateLimitError as exc:
                    retry += 1
                    delay = backoff_delay(retry)
                    told_not_to = _header(exc, "stripe-should-retry") == "false"
                    if told_not_to or retry > self._rate_limit_retries:
                        raise Unavailable(
                            f"Stripe rate-limited {what} and said not to retry"
                            if told_not_to
                            else f"Stripe kept rate-limiting {what} after {retry - 1} retries",
                            hint="wait a minute and run it again",
                            code="stripe_rate_limited",
                            **_request_details(exc),
                        ) from exc
                    if delay >= self.deadline.left():
                        raise self._too_slow(what, rate_limited=True) from exc
                    self._sleep(delay)
                except stripe.StripeError as exc:
                    if isinstance(exc, stripe.APIConnectionError) and self.deadline.expired:
                        raise self._too_slow(what) from exc
                    raise _translate(exc, what, self._key_shown, self._api_base) from exc

    def _too_slow(self, what: str, *, rate_limited: bool = False) -> Unavailable:
        budget = f"{self.deadline.seconds:g} s"
        how = "kept rate-limiting" if rate_limited else "did not answer in time to"
        return Unavailable(
            f"Stripe {how} {what}: {budget}, this command's limit for Stripe, has passed",
            hint=f"Stripe may be slow or down, see status.stripe.com, or STRIPE_API_BASE may "
            f"point at a server that does not answer; retry later, or raise "
            f"{self.deadline.setting}",
            code="stripe_timeout",
            timeout_seconds=self.deadline.seconds,
        )

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
            self._pace()
            page = self._call(what, functools.partial(list_page, query))
            items = page.data
            for item in items:
                yield _plain(item)
            if not page.has_more or not items:
                return
            query = {**query, "starting_after": items[-1].id}

    def _pace(self) -> None:
        if not self._page_interval:
            return
        now = self._monotonic()
        if self._last_page is not None:
            wait = self._last_page + self._page_interval - now
            if wait > 0:
                self._sleep(wait)
                now += wait
        self._last_page = now

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

    def retrieve_payment_intent(self, payment_intent_id: str) -> StripeObject:
        # last_payment_error.payment_method comes expanded (API reference, PaymentIntent).
        return _plain(
            self._call(
                f"retrieve payment intent {payment_intent_id}",
                lambda: self._client.v1.payment_intents.retrieve(payment_intent_id),
            )
        )

    def invoice_of_payment_intent(self, payment_intent_id: str) -> str | None:
        # GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=pi_…:
        # from API 2025-03-31.basil a PaymentIntent no longer names its invoice; the invoice
        # payment joining the two does (API reference, "List all payments for an invoice").
        params: Any = {
            "payment": {"type": "payment_intent", "payment_intent": payment_intent_id},
            "limit": 1,
        }
        page = self._call(
            f"find the invoice of payment intent {payment_intent_id}",
            lambda: self._client.v1.invoice_payments.list(params),
        )
        for payment in page.data:
            invoice = _plain(payment).get("invoice")
            invoice_id = invoice.get("id") if isinstance(invoice, Mapping) else invoice
            if isinstance(invoice_id, str) and invoice_id.startswith("in_"):
                return invoice_id
        return None

    def list_events(
        self, *, created_after: datetime | None = None, on_page: PagesRead | None = None
    ) -> Iterator[StripeObject]:
        """Events oldest first, every page.

        ``created_after`` is inclusive (``created[gte]``): events sharing the cursor's second
        are not missed, and the processed-events table drops the ones already applied.
        Stripe lists newest first, so the window is read whole and then replayed in order.
        """
        params: dict[str, Any] = {}
        if created_after is not None:
            params["created"] = {"gte": _unix(created_after)}
        newest_first: list[dict[str, Any]] = []
        for event in self._pages("list events", self._client.v1.events.list, params):
            newest_first.append(event)
            if on_page is not None and len(newest_first) % PAGE_SIZE == 0:
                on_page(len(newest_first), _created(event))
        if on_page is not None and newest_first and len(newest_first) % PAGE_SIZE:
            on_page(len(newest_first), _created(newest_first[-1]))
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

    def list_subscriptions(self, *, status: str | None = "all") -> Iterator[StripeObject]:
        # Expanded discounts, so MRR can apply their coupons (events send only their ids).
        # Without ``status`` Stripe lists every subscription not canceled (API reference,
        # "List subscriptions": status).
        params: dict[str, Any] = {"expand": list(SUBSCRIPTION_EXPAND)}
        if status is not None:
            params["status"] = status
        return self._pages("list subscriptions", self._client.v1.subscriptions.list, params)

    def retrieve_subscription(self, subscription_id: str) -> StripeObject:
        expand = [name.removeprefix("data.") for name in SUBSCRIPTION_EXPAND]
        return _plain(
            self._call(
                f"retrieve subscription {subscription_id}",
                lambda: self._client.v1.subscriptions.retrieve(subscription_id, {"expand": expand}),
            )
        )

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


def _header(exc: Exception, name: str) -> str | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get(name)
    return None if value is None else str(value)


def _is_stripe_error(exc: Exception) -> bool:
    """Whether the answer carried Stripe's error envelope, ``{"error": {...}}``. (The SDK
    fills ``json_body`` with something else, even the headers, when the body is not JSON.)"""
    body = getattr(exc, "json_body", None)
    return isinstance(body, Mapping) and isinstance(body.get("error"), Mapping)


def _request_details(exc: Exception) -> dict[str, Any]:
    """Stripe's ``Request-Id`` of a failed request, for support and the audit log."""
    request_id = getattr(exc, "request_id", None)
    return {"request_id": request_id} if request_id else {}


def _translate(exc: Exception, what: str, key_shown: str, api_base: str) -> BillingError:
    """One Stripe error as the contract's error (see ``adapters.payments``).

    Stripe's errors (https://docs.stripe.com/api/errors) carry a ``type`` and, for most
    failures, a ``code``; a missing object is ``resource_missing`` naming the ``param``.
    A 404 *without* that code is Stripe's "Unrecognized request URL": the route, not the
    object, is unknown, which means STRIPE_API_BASE (or the API version) is wrong, never
    that an invoice or customer is missing. An answer that is not JSON at all did not come
    from Stripe's API either.
    """
    import stripe

    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    status = getattr(exc, "http_status", None)
    error = getattr(exc, "error", None)
    # The SDK's generic APIError (a 409, say) leaves ``code`` on the parsed error only.
    code = getattr(exc, "code", None) or getattr(error, "code", None)
    request = _request_details(exc)
    if isinstance(exc, stripe.AuthenticationError):
        return BillingError(
            f"Stripe rejected the API key {key_shown} ({what})",
            hint="check STRIPE_SECRET_KEY: it may be revoked, mistyped or for another account",
            code="stripe_auth",
            exit_code=ExitCode.FAILED,
            details=request,
        )
    if isinstance(exc, stripe.PermissionError):
        return BillingError(
            f"the Stripe key {key_shown} may not {what}: {message}",
            hint="give the restricted key this permission, or use a secret key",
            code="stripe_permission",
            exit_code=ExitCode.FAILED,
            details=request,
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
            http_status=status,
            **request,
        )
    if not _is_stripe_error(exc):
        # The SDK's message would quote the whole body (an HTML page, say).
        return _wrong_place(what, "the answer is not Stripe's JSON", status, api_base, request)
    if status == 404 and code != "resource_missing":
        return _wrong_place(what, message, status, api_base, request)
    if status == 409:
        # The SDK retried it already. ``idempotency_key_in_use``: the first request with
        # this key is still running at Stripe (https://docs.stripe.com/error-low-level).
        return Unavailable(
            f"Stripe is still working on an earlier request to {what} with the same "
            f"idempotency key ({message})"
            if code == "idempotency_key_in_use"
            else f"Stripe answered a conflict to {what} (HTTP 409): {message}",
            hint="run it again in a minute: the same key makes Stripe do it at most once",
            code="stripe_conflict",
            http_status=status,
            **request,
        )
    if isinstance(exc, stripe.IdempotencyError):
        # Stripe refuses a key reused with other parameters
        # (https://docs.stripe.com/api/idempotent_requests): our keys are built from what
        # they protect, so this is a bug to report, never something to retry.
        return BillingError(
            f"Stripe refused to {what}: {message}",
            hint="an idempotency key was reused for a different request; nothing was done. "
            "Report this as a bug",
            code="stripe_idempotency",
            exit_code=ExitCode.FAILED,
            details=request,
        )
    decline_code = getattr(error, "decline_code", None) if error is not None else None
    if isinstance(exc, stripe.CardError) or code in _DECLINE_CODES:
        from cloudgreet_billing.domain.failed_payment import payment_method_id

        # A card error names the issuer's advice and the declined PaymentMethod
        # (https://docs.stripe.com/api/errors: advice_code, payment_method).
        method = getattr(error, "payment_method", None) if error is not None else None
        advice = getattr(error, "advice_code", None) if error is not None else None
        return PaymentDeclined(
            f"Stripe declined to {what}: {message}",
            decline_code=decline_code,
            stripe_code=code,
            advice_code=advice if isinstance(advice, str) else None,
            # The PaymentMethod comes expanded (a StripeObject): its id, else the value.
            payment_method=payment_method_id(getattr(method, "id", method)),
        )
    return StripeRequestFailed(
        f"Stripe refused to {what}: {message}",
        stripe_code=code,
        http_status=status,
        request_id=request.get("request_id"),
    )


def _wrong_place(
    what: str, message: str, status: int | None, api_base: str, request: dict[str, Any]
) -> BillingError:
    """The answer of a server that is not Stripe's API at this address (exit 2)."""
    import stripe

    if api_base.rstrip("/") == stripe.DEFAULT_API_BASE:
        hint = (
            f"Stripe itself does not offer this request at API version {API_VERSION}; "
            "report this as a bug"
        )
    elif api_base.rstrip("/").endswith("/v1"):
        hint = f"set STRIPE_API_BASE to the host alone, without /v1 (it is {api_base})"
    else:
        hint = (
            f"check STRIPE_API_BASE (it is {api_base}): unset it to use "
            f"{stripe.DEFAULT_API_BASE}, or give the address of a Stripe API server"
        )
    return BillingError(
        f"the server at {api_base} does not know the request to {what} "
        f"(HTTP {status}: {message}); this is a configuration error, not a missing object",
        hint=hint,
        code="stripe_unrecognized_url",
        exit_code=ExitCode.BAD_INPUT,
        details={"http_status": status, **request},
    )


def verify_webhook(
    payload: bytes, signature: str | None, secrets: tuple[str, ...], *, now: float | None = None
) -> bool:
    """Whether ``payload`` is signed by any of ``secrets`` (several during a rotation) at a
    time within Stripe's 300 s tolerance of ``now`` (default: the system clock), in either
    direction.

    The signature is checked by the SDK's ``WebhookSignature.verify_header``; its time check
    is ``timestamp < time.time() - tolerance``, which refuses only a timestamp too far in
    the past, so a signature dated ahead would stay valid until then. The time is checked
    here instead, both ways, on the header's first ``t=`` (the one the SDK signs with).
    """
    import stripe

    tolerance = stripe.Webhook.DEFAULT_TOLERANCE
    for secret in secrets:
        try:
            # A tolerance of 0 turns the SDK's one-sided time check off.
            stripe.WebhookSignature.verify_header(payload, signature, secret, 0)
        except stripe.SignatureVerificationError:
            continue
        assert signature is not None  # verify_header refuses a missing header
        signed_at = _signed_at(signature)
        clock = time.time() if now is None else now
        return signed_at is not None and abs(signed_at - clock) <= tolerance
    return False


def _signed_at(signature: str) -> int | None:
    """The ``t=`` of a ``Stripe-Signature`` header (the first, as the SDK reads it)."""
    for item in signature.split(","):
        key, _, value = item.partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None
