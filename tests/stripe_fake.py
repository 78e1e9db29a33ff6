"""A local Stripe for tests: the real ``stripe`` SDK talks to it over HTTP on 127.0.0.1.

``FakeStripe`` is a threaded stdlib HTTP server that records every request and checks what
Stripe itself would check, so a test fails when the adapter sends something Stripe would
refuse or that we promised never to send:

- ``Authorization: Bearer <api_key>`` (anything else answers 401, as Stripe does, without
  counting as a violation, so authentication failures can be tested);
- ``Stripe-Version`` equal to the pinned version (``api_version``; ``None`` skips the check);
- an ``Idempotency-Key`` on every POST, never reused for a different request;
- the route exists: an unscripted path answers as Stripe answers a route it does not have,
  404 "Unrecognized request URL (GET: /v1/…)" of type ``invalid_request_error`` with **no**
  ``code`` (a missing *object* is ``not_found()``: 404 ``resource_missing`` with ``param``,
  https://docs.stripe.com/api/errors). Tests of a wrong ``STRIPE_API_BASE`` set
  ``fake.expect_unrecognized = True`` so that answer is not counted as a violation.

Each broken rule is kept in ``fake.violations``; the ``fake_stripe`` fixture fails the test
at teardown when any is left, so a test only has to script answers and assert results.

What Stripe adds to every answer, the fake adds too:

- ``Request-Id: req_…`` on every response (https://docs.stripe.com/api/request_ids);
- Stripe's idempotency layer for POSTs (https://docs.stripe.com/api/idempotent_requests):
  the first answer to a key is saved once the endpoint has started (so not a 401, a 409
  or a 429, which are answered before it) and replayed, status and body, to every later
  POST with that key, marked ``Idempotent-Replayed: true``; a key reused with a different
  path or parameters is refused with 400 ``idempotency_error``; a key whose first request
  is still running answers 409 ``idempotency_key_in_use``.
- ``Stripe-Should-Retry`` only where Stripe sends it (https://docs.stripe.com/error-low-level):
  ``true`` on a 429 lock timeout (``lock_timeout()``,
  https://docs.stripe.com/rate-limits#object-lock-timeouts), ``false`` on a saved 500 of a
  POST, which a retry would only replay. A plain 429 (``rate_limited()``) has none, and
  stripe-python's ``_should_retry`` (``stripe/_http_client.py``) retries only a 409, a 5xx
  or a ``Stripe-Should-Retry: true``, so it leaves a plain 429 to us.

Scripting answers (each route matches a method and an exact path; the newest match wins):

    fake.reply("GET", "/v1/invoices/in_1", invoice)                  # 200 with this body
    fake.reply("POST", "/v1/invoices/in_1/pay", rate_limited(), paid)  # 429, then 200
    fake.reply("GET", "/v1/account", server_error())                  # 500 every time
    fake.paginate("/v1/invoices", invoices)                           # a real list endpoint
    fake.reply("GET", "/v1/customers/cus_1", lambda request: Reply(200, {...}))

Replies are used in order and the last one repeats. ``paginate`` serves a list endpoint the
way Stripe does: newest ``created`` first, ``limit`` (default 10, max 100), ``starting_after``
and ``ending_before`` cursors, ``has_more``, and ``created[gt|gte|lt|lte]`` filters (plus an
optional ``where(item, query)`` filter for anything else, e.g. ``status``).

Inspecting what was sent: ``fake.requests`` (every request, in order) or
``fake.requests_to("POST", "/v1/invoices/in_1/pay")``; each ``Recorded`` carries the
method, path, ``query`` and ``form`` (flat dicts as encoded: ``{"created[gte]": "1700"}``)
and ``headers`` (lower-case names).

Using it from a test:

    from tests.stripe_fake import FakeStripe, fake_stripe, stripe_env  # noqa: F401 (fixture)

    def test_pay(fake_stripe: FakeStripe, monkeypatch):
        stripe_env(monkeypatch, fake_stripe)           # STRIPE_SECRET_KEY + STRIPE_API_BASE
        fake_stripe.reply("POST", "/v1/invoices/in_1/pay", invoice(status="paid"))
        ...

``unused_port()`` gives a port nothing listens on, for "connection refused" tests;
``SilentServer`` accepts connections and never answers, like a Stripe that hangs.
"""

from __future__ import annotations

import json
import secrets
import socket
import string
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

#: The key tests configure; any sk_test_ value works as long as both sides agree.
TEST_API_KEY = "sk_test_fake51Hc0ffee0000000000000000"


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int
    body: Mapping[str, Any] | Sequence[Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


Responder = Reply | Mapping[str, Any] | Callable[[Recorded], Reply]


def error_body(
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    decline_code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """Stripe's error envelope (https://docs.stripe.com/api/errors): ``type`` and
    ``message`` always; ``code`` with its ``doc_url``, ``decline_code`` and ``param`` when
    they apply."""
    error: dict[str, Any] = {"type": type_, "message": message}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if decline_code:
        error["decline_code"] = decline_code
    if param:
        error["param"] = param
    return {"error": error}


def rate_limited() -> Reply:
    """Stripe's rate limiter: 429 ``rate_limit`` with no ``Stripe-Should-Retry`` header
    (https://docs.stripe.com/rate-limits), so the SDK does not retry it by itself."""
    return Reply(
        429,
        error_body(
            "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
        ),
    )


def lock_timeout() -> Reply:
    """A 429 lock timeout: another request holds the object. Unlike a rate limit, Stripe
    marks it ``Stripe-Should-Retry: true``, and the SDK retries it itself
    (https://docs.stripe.com/rate-limits#object-lock-timeouts)."""
    return Reply(
        429,
        error_body(
            "This object cannot be accessed right now because another API request or Stripe "
            "process is currently accessing it. If you see this error intermittently, retry "
            "the request.",
            code="lock_timeout",
        ),
        {"Stripe-Should-Retry": "true"},
    )


def server_error() -> Reply:
    """A 500 from Stripe. The SDK retries it on a GET; on a POST Stripe has saved it under
    the idempotency key and says ``Stripe-Should-Retry: false`` (see ``FakeStripe``)."""
    return Reply(500, error_body("An unknown error occurred", type_="api_error"))


def unrecognized_url(method: str, path: str) -> Reply:
    """Stripe's answer to a route it does not have: 404, no ``code``, no ``param``."""
    return Reply(
        404,
        error_body(
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/."
        ),
    )


def card_declined(decline_code: str = "insufficient_funds") -> Reply:
    """A 402 card error, as ``invoices.pay`` answers for a declined card."""
    return Reply(
        402,
        error_body(
            "Your card has insufficient funds.",
            type_="card_error",
            code="card_declined",
            decline_code=decline_code,
        ),
    )


def not_found(resource: str, object_id: str) -> Reply:
    return Reply(
        404,
        error_body(f"No such {resource}: '{object_id}'", code="resource_missing", param="id"),
    )


def list_page(objects: Sequence[Mapping[str, Any]], url: str, has_more: bool) -> dict[str, Any]:
    """An API list page, as ``GET /v1/<resource>`` returns it."""
    return {"object": "list", "data": list(objects), "has_more": has_more, "url": url}


@dataclass
class _Route:
    method: str
    path: str
    replies: list[Responder]
    used: int = 0

    def next(self) -> Responder:
        reply = self.replies[min(self.used, len(self.replies) - 1)]
        self.used += 1
        return reply


class FakeStripe:
    """A threaded HTTP server on 127.0.0.1 that plays Stripe's API; see the module doc."""

    def __init__(self, *, api_key: str = TEST_API_KEY, api_version: str | None = None) -> None:
        if api_version is None:
            from cloudgreet_billing.adapters.stripe import API_VERSION

            api_version = API_VERSION
        self.api_key = api_key
        self.api_version: str | None = api_version
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        #: True in tests that point the SDK at a wrong path on purpose.
        self.expect_unrecognized = False
        self._routes: list[_Route] = []
        #: Idempotency key -> (the request it was first used for, its saved answer or
        #: None while that first request is still running).
        self._idempotent: dict[
            str, tuple[tuple[str, str, tuple[tuple[str, str], ...]], Reply | None]
        ] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # --- lifecycle -----------------------------------------------------------
    @property
    def url(self) -> str:
        """The base to give ``STRIPE_API_BASE``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeStripe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting -----------------------------------------------------------
    def reply(self, method: str, path: str, *replies: Responder) -> None:
        """Answer ``method path`` with these replies in turn (the last one repeats)."""
        if not replies:
            raise ValueError("give at least one reply")
        with self._lock:
            self._routes.append(_Route(method.upper(), path, list(replies)))

    def paginate(
        self,
        path: str,
        objects: Sequence[Mapping[str, Any]],
        *,
        where: Callable[[Mapping[str, Any], Mapping[str, str]], bool] | None = None,
        before: Sequence[Reply] = (),
    ) -> None:
        """Serve ``GET path`` as a Stripe list endpoint over ``objects``.

        ``before`` replies (e.g. ``rate_limited()``) are answered first, once each.
        """
        ordered = sorted(objects, key=lambda item: -int(item.get("created", 0)))

        def page(request: Recorded) -> Reply:
            return Reply(200, _list_response(path, ordered, request.query, where))

        self.reply("GET", path, *before, page)

    # --- inspecting ----------------------------------------------------------
    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def assert_clean(self) -> None:
        if self.violations:
            raise AssertionError("fake Stripe saw bad requests:\n" + "\n".join(self.violations))

    # --- serving -------------------------------------------------------------
    def _answer(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            where = f"{request.method} {request.path}"
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                # Stripe's own answer; not a violation, since auth tests provoke it on purpose.
                return Reply(
                    401,
                    error_body(
                        "Invalid API Key provided: sk_test_****", type_="invalid_request_error"
                    ),
                )
            if self.api_version is not None and request.headers.get("stripe-version") != (
                self.api_version
            ):
                self.violations.append(
                    f"{where}: Stripe-Version {request.headers.get('stripe-version')!r}, "
                    f"expected {self.api_version!r}"
                )
            key = request.idempotency_key if request.method == "POST" else None
            if request.method == "POST" and not key:
                self.violations.append(f"{where}: POST without an Idempotency-Key")
            if key is not None:
                earlier = self._idempotent_answer(key, request)
                if earlier is not None:
                    return earlier
            route = next(
                (
                    r
                    for r in reversed(self._routes)
                    if r.method == request.method and r.path == request.path
                ),
                None,
            )
            if route is None:
                if not self.expect_unrecognized:
                    self.violations.append(f"{where}: no such route was scripted")
                self._forget(key)
                return unrecognized_url(request.method, request.path)
            responder = route.next()
        if callable(responder):
            reply = responder(request)
        elif isinstance(responder, Reply):
            reply = responder
        else:
            reply = Reply(200, responder)
        if key is not None:
            with self._lock:
                reply = self._save(key, reply)
        return reply

    # --- Stripe's idempotency layer (https://docs.stripe.com/api/idempotent_requests) ---
    @staticmethod
    def _fingerprint(request: Recorded) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return (request.method, request.path, tuple(sorted(request.form.items())))

    def _idempotent_answer(self, key: str, request: Recorded) -> Reply | None:
        """The answer a key already has, or None after reserving it for this request."""
        fingerprint = self._fingerprint(request)
        if key not in self._idempotent:
            self._idempotent[key] = (fingerprint, None)
            return None
        first, saved = self._idempotent[key]
        if first != fingerprint:
            self.violations.append(
                f"{request.method} {request.path}: Idempotency-Key {key!r} reused for a "
                f"different request (first {first[0]} {first[1]} {dict(first[2])})"
            )
            return Reply(
                400,
                error_body(
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                    type_="idempotency_error",
                ),
            )
        if saved is None:
            return Reply(
                409,
                error_body(
                    "There is currently another in-progress request using this Idempotent "
                    "Key (that probably means you submitted twice, and the other request is "
                    f"still going through): {key}. Please try again later.",
                    code="idempotency_key_in_use",
                ),
            )
        return Reply(saved.status, saved.body, {**saved.headers, "Idempotent-Replayed": "true"})

    def _save(self, key: str, reply: Reply) -> Reply:
        """Keep the first answer the endpoint gave; answers from before the endpoint ran
        (authentication, a concurrent request, the rate limiter) are not kept."""
        if reply.status in (401, 409, 429):
            self._forget(key)
            return reply
        if reply.status >= 500:
            # Saved like any answer, so a retry would only replay it: Stripe says not to.
            reply = Reply(
                reply.status, reply.body, {**reply.headers, "Stripe-Should-Retry": "false"}
            )
        fingerprint, _ = self._idempotent[key]
        self._idempotent[key] = (fingerprint, reply)
        return reply

    def _forget(self, key: str | None) -> None:
        if key is not None:
            self._idempotent.pop(key, None)


def invoice_payment_filter(item: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    """``GET /v1/invoice_payments``'s filters (API reference, "List all payments for an
    invoice"): ``invoice``, ``status``, and ``payment[type]`` with ``payment[payment_intent]``
    or ``payment[payment_record]``. ``paginate(..., where=invoice_payment_filter)`` serves
    an account's invoice payments as Stripe lists them (``created`` and paging as for any
    list)."""
    payment = item.get("payment") or {}
    invoice = item.get("invoice")
    invoice_id = invoice.get("id") if isinstance(invoice, Mapping) else invoice
    wanted = {
        "invoice": invoice_id,
        "status": item.get("status"),
        "payment[type]": payment.get("type"),
        "payment[payment_intent]": payment.get("payment_intent"),
        "payment[payment_record]": payment.get("payment_record"),
    }
    return all(query[key] == value for key, value in wanted.items() if key in query)


def _created_filter(query: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    bounds = {
        op: int(query[f"created[{op}]"])
        for op in ("gt", "gte", "lt", "lte")
        if f"created[{op}]" in query
    }
    if "created" in query:
        bounds["eq"] = int(query["created"])

    def keep(item: Mapping[str, Any]) -> bool:
        created = int(item.get("created", 0))
        return (
            ("gt" not in bounds or created > bounds["gt"])
            and ("gte" not in bounds or created >= bounds["gte"])
            and ("lt" not in bounds or created < bounds["lt"])
            and ("lte" not in bounds or created <= bounds["lte"])
            and ("eq" not in bounds or created == bounds["eq"])
        )

    return keep


def _list_response(
    path: str,
    ordered: Sequence[Mapping[str, Any]],
    query: Mapping[str, str],
    where: Callable[[Mapping[str, Any], Mapping[str, str]], bool] | None,
) -> dict[str, Any]:
    keep = _created_filter(query)
    items = [item for item in ordered if keep(item) and (where is None or where(item, query))]
    limit = max(1, min(int(query.get("limit", "10")), 100))
    ids = [item["id"] for item in items]
    if "starting_after" in query:
        start = ids.index(query["starting_after"]) + 1 if query["starting_after"] in ids else 0
        chunk = items[start : start + limit]
        has_more = start + limit < len(items)
    elif "ending_before" in query:
        end = ids.index(query["ending_before"]) if query["ending_before"] in ids else len(items)
        begin = max(0, end - limit)
        chunk = items[begin:end]
        has_more = begin > 0
    else:
        chunk = items[:limit]
        has_more = limit < len(items)
    return list_page(chunk, path, has_more)


def _handler_for(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            request = Recorded(
                method=self.command,
                path=parts.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                form=dict(parse_qsl(raw, keep_blank_values=True)),
                headers={name.lower(): value for name, value in self.headers.items()},
            )
            reply = fake._answer(request)
            body = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Request-Id", request_id())
            if fake.api_version is not None:
                self.send_header("Stripe-Version", fake.api_version)
            if request.idempotency_key:
                self.send_header("Idempotency-Key", request.idempotency_key)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows the recorded requests when it matters."""

    return Handler


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte:
    the hung upstream that a read timeout exists for. ``accepted`` holds the
    ``time.monotonic()`` of each connection, so a test can see which tries were made."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.05)
        self._open: list[socket.socket] = []
        self.accepted: list[float] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def _accept(self) -> None:
        import time

        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self.accepted.append(time.monotonic())
            self._open.append(connection)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        for connection in self._open:
            connection.close()
        self._socket.close()


def request_id() -> str:
    """A request id shaped like Stripe's: ``req_`` and 14 letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return "req_" + "".join(secrets.choice(alphabet) for _ in range(14))


def unused_port() -> int:
    """A local port with nothing listening (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stripe_env(monkeypatch: pytest.MonkeyPatch, fake: FakeStripe) -> None:
    """Point the CLI (``load_settings``) at the fake."""
    monkeypatch.setenv("STRIPE_SECRET_KEY", fake.api_key)
    monkeypatch.setenv("STRIPE_API_BASE", fake.url)


@pytest.fixture
def fake_stripe(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    """A running ``FakeStripe``; fails the test if it saw a bad request. Also makes the
    gateway's retry back-off instant, so retry tests take no wall time."""
    import cloudgreet_billing.adapters.stripe as stripe_adapter

    monkeypatch.setattr(stripe_adapter, "RETRY_BASE_DELAY", 0.0)
    with FakeStripe() as fake:
        yield fake
    fake.assert_clean()
