"""``serve``: the Stripe webhook endpoint on a real ASGI server (uvicorn + Starlette).

``POST /api/internal/stripe/alerts`` verifies the ``Stripe-Signature`` header against every
``STRIPE_WEBHOOK_SECRET`` (rotation), applies the event exactly as ``sync`` does, and
answers 2xx only after the commit. The answer tells Stripe whether to deliver again, which
it does for days on anything but 2xx and then disables the endpoint, so:

- 200: applied, skipped, a duplicate, or quarantined (recorded with its reason; a
  redelivery would fail the same way, and updates the same quarantine row);
- 400: a bad signature, a body that is not JSON, or JSON that is not an event;
- 503: a fault of the store that a retry can cure (unreachable, locked, a serialization
  failure: ``Unavailable``); 500: anything else, a bug, also retried.

``GET /healthz`` says whether the store answers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, note

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from cloudgreet_billing.adapters.payments import PaymentGateway
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.domain.dunning import DunningPlanner

WEBHOOK_PATH: Final = "/api/internal/stripe/alerts"
SOURCE: Final = "webhook"
#: Stripe's events are a few KiB; anything this large is not one.
MAX_BODY_BYTES: Final = 1024 * 1024


class StorePerThread:
    """One store connection per server thread, all closed at shutdown.

    Requests run in a thread pool; a connection is never shared between threads, so
    concurrent deliveries really are concurrent transactions (serialised by the database).
    """

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open = open_store
        self._local = threading.local()
        self._opened: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._open()
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def discard(self) -> None:
        """Forget this thread's store after an error: a connection broken by a database
        restart or failover would otherwise fail every later request on this thread."""
        store = getattr(self._local, "store", None)
        if store is None:
            return
        del self._local.store
        with self._lock:
            if store in self._opened:
                self._opened.remove(store)
        with contextlib.suppress(Exception):
            store.close()

    def close_all(self) -> None:
        with self._lock:
            for store in self._opened:
                store.close()
            self._opened.clear()


def build_app(
    stores: StorePerThread,
    *,
    secrets: tuple[str, ...],
    planner: DunningPlanner,
    clock: Callable[[], Any],
    max_body: int = MAX_BODY_BYTES,
    gateway: Callable[[], PaymentGateway | None] = lambda: None,
) -> Starlette:
    """The ASGI application (tests run it under uvicorn, as ``serve`` does). ``gateway``
    opens Stripe for an event whose decline must be read there (None: no key)."""
    import json

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from cloudgreet_billing.adapters.stripe import verify_webhook
    from cloudgreet_billing.domain.events import EventPlan, EventResult, is_event, plan_event
    from cloudgreet_billing.domain.json_text import NotJson, loads
    from cloudgreet_billing.domain.quarantine import RejectedEvent, reject, reject_text
    from cloudgreet_billing.errors import BadInput, BillingError, Unavailable

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message}}, status_code=status)

    def planned(body: bytes) -> EventPlan | RejectedEvent | str:
        """The event's plan, its rejection (to quarantine), or why it is no event (400)."""
        text = body.decode("utf-8")  # verified, so UTF-8
        try:
            event = loads(text)
        except NotJson as exc:
            # Signed by Stripe, so Stripe's to mend: kept, and answered 200.
            return reject_text(text, f"the event's JSON is not valid: {exc}", SOURCE)
        except json.JSONDecodeError as exc:
            return f"not JSON: {exc.msg}"
        except (ValueError, RecursionError):
            # Valid JSON, but nested too deep or with a number too long for Python.
            return reject_text(text, "the event's JSON is too deep or too long to read", SOURCE)
        if not is_event(event):
            return "not a Stripe event object"
        try:
            return plan_event(event, SOURCE)
        except BadInput as exc:
            return reject(event, exc.message, SOURCE)

    def apply(work: EventPlan | RejectedEvent) -> EventResult:
        from cloudgreet_billing.services.payment_failures import complete_plan

        if isinstance(work, EventPlan):
            # complete_plan opens a gateway only for an event that needs Stripe.
            try:
                work = complete_plan(work, gateway)
            except BadInput as exc:
                work = reject(work.event, exc.message, SOURCE)
        plans, rejected = ([work], []) if isinstance(work, EventPlan) else ([], [work])
        try:
            store = stores.get()
            return store.apply_event_plans(plans, planner=planner, now=clock(), rejected=rejected)[
                0
            ]
        except Exception:
            stores.discard()
            raise

    async def stripe_alerts(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return refuse(413, f"body over {max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return refuse(413, f"body over {max_body} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        signature = request.headers.get("stripe-signature")
        try:
            verified = verify_webhook(body, signature, secrets, now=clock().timestamp())
        except UnicodeDecodeError:
            verified = False
        if not verified:
            reason = "missing" if not signature else "bad or stale"
            return refuse(400, f"{reason} Stripe-Signature")
        work = await run_in_threadpool(planned, body)
        if isinstance(work, str):
            return refuse(400, work)
        try:
            result = await run_in_threadpool(apply, work)
        except Unavailable as exc:
            # Not committed, and a retry can cure it: Stripe delivers again.
            return JSONResponse(
                {"error": {"message": exc.message}}, status_code=503, headers={"Retry-After": "60"}
            )
        except BillingError as exc:
            return refuse(500, exc.message)
        answer: dict[str, Any] = {"received": True, "id": result.event_id, "status": result.status}
        if result.quarantine_id is not None:
            answer.update(quarantine_id=result.quarantine_id, reason=result.error)
        return JSONResponse(answer)

    async def healthz(request: Request) -> JSONResponse:
        def check() -> str:
            try:
                store = stores.get()
                store.schema_version()
            except Exception:
                stores.discard()
                raise
            return store.backend

        try:
            backend = await run_in_threadpool(check)
        except Exception as exc:
            # The type only: driver messages can carry connection details.
            return JSONResponse({"ok": False, "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True, "store": backend})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            stores.close_all()

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, stripe_alerts, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8000,
    json_output: JsonFlag = False,
) -> None:
    """Receive Stripe webhooks at POST /api/internal/stripe/alerts (and GET /healthz).

    Answers 200 once an event is applied or quarantined, 400 for a bad signature or a body
    that is no event, 503 while the store is unavailable (Stripe delivers again).

    Example: cloudgreet-billing serve --port 8000   # then: stripe listen --forward-to
    localhost:8000/api/internal/stripe/alerts
    """
    import uvicorn

    from cloudgreet_billing.bootstrap import open_gateway, open_store
    from cloudgreet_billing.cli.sync import planner_for
    from cloudgreet_billing.clock import utcnow

    context = app_context(ctx)
    settings = context.settings
    settings.require("STRIPE_WEBHOOK_SECRET")
    # Opened once up front so that a bad URL or a missing schema fails before listening.
    context.store()
    stores = StorePerThread(lambda: open_store(settings))
    app = build_app(
        stores,
        secrets=settings.stripe_webhook_secrets,
        planner=planner_for(settings),
        clock=utcnow,
        # One gateway per event that needs one: each has its own deadline.
        gateway=lambda: open_gateway(settings) if settings.stripe_secret_key else None,
    )
    note(f"listening on http://{host}:{port}{WEBHOOK_PATH}")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
