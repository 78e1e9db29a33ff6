"""Properties of ``sync --events-file`` on SQLite and PostgreSQL (hypothesis).

(a) A file that is not events is refused whole: exit 2, one line on stderr, no traceback,
    every table's row count unchanged.
(b) In a realistic stream, events mutated into bad ones (wrong types, booleans for
    integers, integers past bigint, ids without their prefix, bad currencies, JSON nested
    too deep) are each quarantined with a reason, exit 4, and the good events are applied
    exactly as they are without the bad ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cloudgreet_billing.adapters.store.migrations import TABLES
from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.events import is_event
from tests.cli.helpers import run
from tests.sync.conftest import T0, customer, event, full_invoice, subscription

PROPERTY_SETTINGS: Final = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEEP: Final = 20_000


# --- realistic streams -------------------------------------------------------------------
def _ids(n: int) -> tuple[str, str, str]:
    return (f"in_1QpL8HLkdIwHu7ix{n:08d}", f"cus_RiJ2m0yQbTgC{n:02d}", f"sub_1QpL7xLkdIwHu7{n:08d}")


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Invoices finalized, failing and settled, with their customers' and subscriptions'
    updates, oldest first, as the Events API or ``stripe listen`` gives them."""
    events: list[dict[str, Any]] = []
    moment = T0
    for n in range(draw(st.integers(1, 4))):
        invoice_id, customer_id, sub_id = _ids(n)
        serial = 0

        def add(kind: str, obj: dict[str, Any], n: int = n) -> None:
            nonlocal moment, serial
            moment += draw(st.integers(1, 600))
            serial += 1
            events.append(event(f"evt_1QpL8ILkdI{n:02d}{serial:02d}{moment}", kind, obj, moment))

        add("customer.updated", {**customer(customer_id), "created": T0 - 86_400})
        add(
            "customer.subscription.updated",
            {**subscription(sub_id), "customer": customer_id, "status": "active"},
        )
        invoice = {"customer": customer_id, "subscription": sub_id}
        add("invoice.finalized", full_invoice(invoice_id, attempt_count=0, **invoice))
        attempts = draw(st.integers(0, 3))
        for attempt in range(1, attempts + 1):
            add(
                "invoice.payment_failed", full_invoice(invoice_id, attempt_count=attempt, **invoice)
            )
        ending = draw(st.sampled_from(["open", "paid", "void"]))
        if ending != "open":
            kind = "invoice.paid" if ending == "paid" else "invoice.voided"
            add(kind, full_invoice(invoice_id, status=ending, attempt_count=attempts, **invoice))
    return events


#: Each turns a good event into one that can never be applied as it is.
MUTATIONS: Final = {
    "list for an amount": ("data.object", "amount_due", [1]),
    "string for an amount": ("data.object", "amount_due", "4900"),
    "bool for an integer": ("data.object", "attempt_count", True),
    "word for a count": ("data.object", "attempt_count", "two"),
    "past bigint": ("data.object", "total", 2**63),
    "below bigint": ("data.object", "amount_remaining", -(2**63) - 1),
    "far past bigint": ("data.object", "amount_paid", 10**30),
    "two-letter currency": ("data.object", "currency", "US"),
    "customer without prefix": ("data.object", "customer", "RiJ2m0yQbTgC4x"),
    "object id without prefix": ("data.object", "id", "1QpL8HLkdIwHu7ixl4OzzPMv"),
    "event id without prefix": ("", "id", "1QpL8ILkdIwHu7ixa0Bq1Zx9"),
    "bool for a time": ("", "created", True),
    "time past 2100": ("", "created", 5_000_000_000),
    "string for a flag": ("", "livemode", "false"),
    "deep nesting": ("data.object", "metadata", "DEEP"),
}


def mutate(item: dict[str, Any], name: str) -> dict[str, Any]:
    where, key, value = MUTATIONS[name]
    bad = json.loads(json.dumps(item))
    holder = bad
    for part in filter(None, where.split(".")):
        holder = holder[part]
    holder[key] = value
    return bad


def as_text(events: list[dict[str, Any]], shape: str) -> str:
    if shape == "list":
        text = json.dumps(events)
    elif shape == "pretty":
        text = "".join(json.dumps(item, indent=2) + "\n" for item in events)
    else:
        text = "".join(json.dumps(item) + "\n" for item in events)
    # The placeholder becomes nesting deeper than Python's JSON parser can follow.
    return text.replace('"DEEP"', "[" * DEEP + "]" * DEEP)


# --- reading the whole store -------------------------------------------------------------
def wipe() -> None:
    store = open_store(load_settings())
    try:
        with store._transaction():  # type: ignore[attr-defined]
            for table in reversed(TABLES):
                if table != "billing_schema_version":
                    # Table names from the schema's own list, never from input.
                    store._execute(f"DELETE FROM {table}")  # type: ignore[attr-defined]  # noqa: S608
    finally:
        store.close()


def snapshot() -> dict[str, Any]:
    """Everything sync writes, without the ids and times a run picks itself."""
    store = open_store(load_settings())
    try:
        invoices = store._execute(  # type: ignore[attr-defined]
            "SELECT id, customer_id, subscription_id, status, currency, amount_due, "
            "amount_paid, amount_remaining, total, attempt_count, first_failed_at, "
            "last_failure_code, last_failure_message FROM billing_invoices ORDER BY id"
        ).fetchall()
        customers = store._execute(  # type: ignore[attr-defined]
            "SELECT id, email, phone, deleted FROM billing_customers ORDER BY id"
        ).fetchall()
        subscriptions = store._execute(  # type: ignore[attr-defined]
            "SELECT id, customer_id, status, currency FROM billing_subscriptions ORDER BY id"
        ).fetchall()
        processed = store._execute(  # type: ignore[attr-defined]
            "SELECT id, outcome FROM billing_stripe_events ORDER BY id"
        ).fetchall()
        alerts = sorted(
            (a.type, a.status, a.invoice_id, a.attempt_count, a.stripe_event_id, a.last_failure)
            for a in store.list_alerts(AlertQuery(statuses=None, limit=None))
        )
        steps = sorted(
            (s.invoice_id, s.day, s.channel, s.status, s.due_at)
            for s in store.list_steps(limit=None)
        )
        return {
            "invoices": [tuple(map(str, row)) for row in invoices],
            "customers": [tuple(map(str, row)) for row in customers],
            "subscriptions": [tuple(map(str, row)) for row in subscriptions],
            "processed": [tuple(row) for row in processed],
            "alerts": alerts,
            "steps": steps,
        }
    finally:
        store.close()


def row_counts() -> dict[str, int]:
    store = open_store(load_settings())
    try:
        return store.row_counts()
    finally:
        store.close()


def quarantined() -> list[Any]:
    store = open_store(load_settings())
    try:
        return store.list_quarantined(limit=None)
    finally:
        store.close()


# --- (b) bad events among good ones --------------------------------------------------------
@PROPERTY_SETTINGS
@given(
    history=histories(),
    shape=st.sampled_from(["ndjson", "pretty", "list"]),
    data=st.data(),
)
def test_bad_events_are_quarantined_and_the_good_ones_applied_as_without_them(
    store_env: str, tmp_path: Path, history: list[dict[str, Any]], shape: str, data: Any
) -> None:
    positions = data.draw(
        st.sets(st.integers(0, len(history) - 1), min_size=1, max_size=max(1, len(history) // 2))
    )
    names = list(MUTATIONS)
    if shape == "list":
        names.remove("deep nesting")  # a list is one JSON value: too deep is a bad file
    mutations = {}
    for position in sorted(positions):
        choices = [n for n in names if not (n == "deep nesting" and position == 0)]
        if not history[position]["type"].startswith("invoice."):
            choices = [n for n in choices if MUTATIONS[n][0] == ""]
        mutations[position] = data.draw(st.sampled_from(choices))
    stream = [
        mutate(item, mutations[n]) if n in mutations else item for n, item in enumerate(history)
    ]
    good = [item for n, item in enumerate(history) if n not in mutations]

    wipe()
    path = tmp_path / "good.json"
    path.write_text(as_text(good, shape))
    assert run("sync", "--events-file", str(path), "--json").exit_code == 0
    expected = snapshot()

    wipe()
    path = tmp_path / "mixed.json"
    path.write_text(as_text(stream, shape))
    result = run("sync", "--events-file", str(path), "--json")
    output = result.stdout + result.stderr
    assert result.exit_code == 4, output
    assert "unexpected" not in output and "Traceback" not in output
    body = json.loads(result.stdout)["data"]
    assert (body["events_seen"], body["events_failed"]) == (len(stream), len(mutations))
    assert snapshot() == expected

    rows = quarantined()
    assert len(rows) == len(mutations) == body["quarantined_count"]
    assert all(row.reason and row.status == "quarantined" for row in rows)
    kept_ids = {row.event_id for row in rows if row.event_id is not None}
    readable = {
        stream[n]["id"]
        for n, name in mutations.items()
        if name not in ("deep nesting", "event id without prefix")
    }
    assert kept_ids == readable


# --- (a) files that are not events ---------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def _no_events(value: Any) -> bool:
    """A JSON value (or the first item of a list or list page) that is not an event."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, dict) and value.get("object") == "list":
        items = value.get("data") if isinstance(value.get("data"), list) else [value]
    return bool(items) and not is_event(items[0])


def _starts_unlike_json_containers(text: str) -> bool:
    """Text whose first character (past a BOM and whitespace, as the reader skips them)
    opens neither an object nor a list."""
    meaningful = text.replace("\ufeff", "").strip()
    return bool(meaningful) and meaningful[0] not in "[{"


GOOD_LINES: Final = "".join(
    json.dumps(event(f"evt_1QpL8ILkdIwHu7ix{n:08d}", "invoice.paid", full_invoice(), T0 + n)) + "\n"
    for n in range(3)
)

not_events = st.one_of(
    # Not JSON at all: a CSV, a log, prose.
    st.text(min_size=1).filter(_starts_unlike_json_containers),
    st.text(min_size=1).map(lambda text: "{" + text),
    # JSON that is not events: numbers, strings, invoices, a list of anything else.
    json_values.filter(_no_events).map(json.dumps),
    st.lists(st.builds(full_invoice), min_size=1, max_size=3).map(
        lambda invoices: json.dumps({"object": "list", "data": invoices, "has_more": False})
    ),
    # Events, but the file itself broken: a list cut short, bytes that are not UTF-8,
    # nesting too deep, a first value that is not an event.
    st.integers(1, 2000).map(lambda cut: "[" + GOOD_LINES.replace("\n", ",")[:-cut]),
    st.integers(0, len(GOOD_LINES)).map(lambda at: GOOD_LINES[:at] + "\udcff" + GOOD_LINES[at:]),
    st.integers(1_000, 50_000).map(lambda depth: "[" * depth + "]" * depth),
    json_values.filter(_no_events).map(lambda value: json.dumps(value) + "\n" + GOOD_LINES),
)


@PROPERTY_SETTINGS
@given(text=not_events)
def test_a_file_that_is_not_events_is_refused_whole(
    store_env: str, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assume(text.strip())
    before = row_counts()
    result = run("sync", "--events-file", str(path))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("store: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    assert len(lines[0]) < 400  # never the file echoed back
    assert row_counts() == before


@pytest.fixture(autouse=True)
def _some_data_already(store_env: str, tmp_path: Path) -> None:
    """The store holds events before each test, so "unchanged" is not "empty"."""
    path = tmp_path / "seed.ndjson"
    path.write_text(GOOD_LINES)
    assert run("sync", "--events-file", str(path)).exit_code == 0
