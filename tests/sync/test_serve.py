"""The webhook endpoint under a real uvicorn server, on both stores."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe
import uvicorn

from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.cli.serve import WEBHOOK_PATH, StorePerThread, build_app
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.dunning import TimelinePlanner
from tests.sync.conftest import T0, failed

OLD_SECRET = "whsec_old0000000000000000000000"
NEW_SECRET = "whsec_new1111111111111111111111"


@pytest.fixture
def server(store_env: str) -> Iterator[str]:
    settings = load_settings()
    stores = StorePerThread(lambda: open_store(settings))
    asgi = build_app(
        stores,
        secrets=(NEW_SECRET, OLD_SECRET),
        planner=TimelinePlanner(),
        clock=utcnow,
        max_body=64 * 1024,
    )
    with uvicorn_serving(asgi) as url:
        yield url


@contextlib.contextmanager
def uvicorn_serving(asgi: Any) -> Iterator[str]:
    """``asgi`` under a real uvicorn server on a free port, as ``serve`` runs it."""
    config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.01)
    port = instance.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


def signed(payload: str, secret: str = NEW_SECRET, at: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=at)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def open_alerts() -> list[Any]:
    store = open_store(load_settings())
    try:
        return store.list_alerts(AlertQuery(limit=None))
    finally:
        store.close()


def test_signed_event_is_applied_and_acknowledged_after_commit(server: str) -> None:
    payload = json.dumps(failed("evt_1", "in_1", 1, T0))
    response = httpx.post(server + WEBHOOK_PATH, content=payload, headers=signed(payload))
    assert response.status_code == 200
    assert response.json() == {"received": True, "id": "evt_1", "status": "applied"}
    assert [a.invoice_id for a in open_alerts()] == ["in_1"]
    assert httpx.get(server + "/healthz").json()["ok"] is True


def test_rotated_secret_is_accepted(server: str) -> None:
    payload = json.dumps(failed("evt_2", "in_2", 1, T0))
    response = httpx.post(
        server + WEBHOOK_PATH, content=payload, headers=signed(payload, OLD_SECRET)
    )
    assert response.status_code == 200


@pytest.mark.parametrize("case", ["missing", "tampered", "stale", "unknown secret"])
def test_bad_signatures_are_refused(server: str, case: str) -> None:
    payload = json.dumps(failed("evt_3", "in_3", 1, T0))
    headers = {
        "missing": {"Content-Type": "application/json"},
        "tampered": signed(payload),
        "stale": signed(payload, at=int(time.time()) - 301),
        "unknown secret": signed(payload, "whsec_someoneelse000000000000"),
    }[case]
    body = payload.replace("in_3", "in_4") if case == "tampered" else payload
    response = httpx.post(server + WEBHOOK_PATH, content=body, headers=headers)
    assert response.status_code == 400
    assert open_alerts() == []


def test_oversized_body_is_413(server: str) -> None:
    payload = json.dumps({"padding": "x" * 70_000})
    response = httpx.post(server + WEBHOOK_PATH, content=payload, headers=signed(payload))
    assert response.status_code == 413


def test_eight_concurrent_deliveries_yield_exactly_one_alert(server: str) -> None:
    payload = json.dumps(failed("evt_5", "in_5", 1, T0))
    headers = signed(payload)

    def deliver(_: int) -> httpx.Response:
        return httpx.post(server + WEBHOOK_PATH, content=payload, headers=headers, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(deliver, range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert sorted(r.json()["status"] for r in responses) == ["applied"] + ["duplicate"] * 7
    (alert,) = open_alerts()
    assert alert.invoice_id == "in_5"
    store = open_store(load_settings())
    try:
        assert len(store.list_steps(invoice_id="in_5", limit=None)) == 3
    finally:
        store.close()


def test_a_thread_drops_its_store_after_an_error_and_reconnects() -> None:
    from cloudgreet_billing.cli.serve import StorePerThread

    opened: list[object] = []

    class Connection:
        closed = False

        def close(self) -> None:
            self.closed = True

    def open_store() -> Connection:
        opened.append(Connection())
        return opened[-1]  # type: ignore[return-value]

    stores = StorePerThread(open_store)  # type: ignore[arg-type]
    first = stores.get()
    assert stores.get() is first
    stores.discard()
    assert first.closed  # type: ignore[attr-defined]
    assert stores.get() is not first
    stores.close_all()
    assert len(opened) == 2


# --- quarantine: a bad event is recorded and acknowledged, never retried for days ---------
def bad_event(n: int = 1) -> dict[str, Any]:
    from tests.sync.conftest import event, full_invoice

    obj = {**full_invoice(f"in_1QpL8HLkdIwHu7ix{n:08d}"), "amount_due": [1]}
    return event(f"evt_1QpL8ILkdIwHu7ix{n:08d}", "invoice.payment_failed", obj, T0 + n)


def quarantined_rows() -> list[Any]:
    store = open_store(load_settings())
    try:
        return store.list_quarantined(statuses=None, limit=None)
    finally:
        store.close()


def test_a_bad_event_is_quarantined_and_acknowledged_once(server: str) -> None:
    payload = json.dumps(bad_event())
    responses = [
        httpx.post(server + WEBHOOK_PATH, content=payload, headers=signed(payload))
        for _ in range(3)  # Stripe's redeliveries, each freshly signed
    ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    (row,) = quarantined_rows()
    assert responses[0].json() == {
        "received": True,
        "id": "evt_1QpL8ILkdIwHu7ix00000001",
        "status": "quarantined",
        "quarantine_id": row.id,
        "reason": "invoice in_1QpL8HLkdIwHu7ix00000001 field amount_due: expected an integer, "
        "got list",
    }
    assert (row.source, row.times_seen, json.loads(row.payload)) == (
        "webhook",
        3,
        json.loads(payload),
    )
    assert open_alerts() == []


def test_json_too_deep_to_read_is_quarantined_as_text(server: str) -> None:
    payload = '{"id": "evt_1", "object": "event", "data": ' + "[" * 20_000 + "]" * 20_000 + "}"
    response = httpx.post(server + WEBHOOK_PATH, content=payload, headers=signed(payload))
    assert (response.status_code, response.json()["status"]) == (200, "quarantined")
    again = httpx.post(server + WEBHOOK_PATH, content=payload, headers=signed(payload))
    assert again.json()["quarantine_id"] == response.json()["quarantine_id"]
    (row,) = quarantined_rows()
    assert (row.event_id, json.loads(row.payload), row.times_seen) == (None, payload, 2)


@pytest.mark.parametrize("number", ["NaN", "-Infinity", "1e400"])
def test_a_number_json_cannot_write_is_quarantined_as_text(server: str, number: str) -> None:
    # Python's json would read it; PostgreSQL's jsonb would not: no store keeps it.
    text = json.dumps(bad_event()).replace('"amount_due": [1]', f'"amount_due": {number}')
    response = httpx.post(server + WEBHOOK_PATH, content=text, headers=signed(text))
    assert (response.status_code, response.json()["status"]) == (200, "quarantined")
    assert response.json()["reason"].startswith("the event's JSON is not valid: ")
    (row,) = quarantined_rows()
    assert json.loads(row.payload) == text
    assert open_alerts() == []


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a Stripe event"),
        ('{"object": "invoice"}', "not a"),
    ],
)
def test_what_is_not_an_event_is_still_400(server: str, payload: str, says: str) -> None:
    response = httpx.post(server + WEBHOOK_PATH, content=payload, headers=signed(payload))
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]
    assert quarantined_rows() == []


def test_a_locked_store_answers_503_so_stripe_delivers_again(
    store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.sync.test_quarantine import write_lock_held

    payload = json.dumps(failed("evt_9", "in_9", 1, T0))
    with write_lock_held(store_env, monkeypatch) as locked:
        stores = StorePerThread(lambda: locked)
        stores.discard = lambda: None  # type: ignore[method-assign]  # keep the one store
        with serving(stores) as url:
            response = httpx.post(url + WEBHOOK_PATH, content=payload, headers=signed(payload))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert "store could not apply the events" in response.json()["error"]["message"]
    assert open_alerts() == [] and quarantined_rows() == []


@contextlib.contextmanager
def serving(stores: StorePerThread) -> Iterator[str]:
    asgi = build_app(stores, secrets=(NEW_SECRET,), planner=TimelinePlanner(), clock=utcnow)
    config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{instance.servers[0].sockets[0].getsockname()[1]}"
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


# --- signature timestamps: refused too far in the past and too far in the future ----------
@pytest.mark.parametrize(
    ("signed_offset", "accepted"),
    [(0, True), (-300, True), (-301, False), (300, True), (301, False), (86_400, False)],
)
def test_a_signature_is_good_only_within_300_seconds_either_way(
    signed_offset: int, accepted: bool
) -> None:
    from freezegun import freeze_time

    from cloudgreet_billing.adapters.stripe import verify_webhook

    payload = json.dumps(failed("evt_1", "in_1", 1, T0))
    now = 1_780_000_000
    header = stripe.WebhookSignature.generate_signature_header(
        payload, NEW_SECRET, timestamp=now + signed_offset
    )
    with freeze_time(datetime.fromtimestamp(now, UTC)):
        assert verify_webhook(payload.encode(), header, (OLD_SECRET, NEW_SECRET)) is accepted
    # The clock can also be given, as serve gives its own.
    assert verify_webhook(payload.encode(), header, (NEW_SECRET,), now=now) is accepted


def test_a_signature_dated_ahead_is_refused_by_the_server(server: str) -> None:
    payload = json.dumps(failed("evt_6", "in_6", 1, T0))
    ahead = httpx.post(
        server + WEBHOOK_PATH, content=payload, headers=signed(payload, at=int(time.time()) + 400)
    )
    assert (ahead.status_code, ahead.json()) == (
        400,
        {"error": {"message": "bad or stale Stripe-Signature"}},
    )
    assert open_alerts() == []
    in_time = httpx.post(
        server + WEBHOOK_PATH, content=payload, headers=signed(payload, at=int(time.time()) + 200)
    )
    assert in_time.status_code == 200


def test_a_payment_intents_failure_is_linked_to_its_invoice_through_stripe(
    store_env: str, fake: Any
) -> None:
    # The webhook opens Stripe (the fake, through the real SDK) for the event that needs
    # it: the invoice payment names the invoice, and the invoice is read as Stripe has it.
    from cloudgreet_billing.bootstrap import open_gateway
    from tests.sync.conftest import event
    from tests.sync.test_payment_declines import (
        INTENT,
        basil_invoice,
        declined_intent,
        serve_invoice_payments,
    )

    settings = load_settings()
    asgi = build_app(
        StorePerThread(lambda: open_store(settings)),
        secrets=(NEW_SECRET,),
        planner=TimelinePlanner(),
        clock=utcnow,
        gateway=lambda: open_gateway(settings),
    )
    serve_invoice_payments(fake)
    fake.reply("GET", "/v1/invoices/in_1QpL8HLkdIwHu7ixl4OzzPMv", basil_invoice())
    intent_failed = event(
        "evt_3QpL8ILkdIwHu7ix1Xr2pQ9a", "payment_intent.payment_failed", declined_intent(), T0
    )
    payload = json.dumps(intent_failed)
    with uvicorn_serving(asgi) as url:
        response = httpx.post(url + WEBHOOK_PATH, content=payload, headers=signed(payload))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applied"
    [alert] = open_alerts()
    assert alert.last_failure == "stolen_card: Your card was declined."
    lookups = fake.requests_to("GET", "/v1/invoice_payments")
    assert [r.query["payment[payment_intent]"] for r in lookups] == [INTENT]
