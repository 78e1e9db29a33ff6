"""The webhook endpoint under a real uvicorn server, on both stores."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
    config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.01)
    port = instance.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
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
