"""``sync --events-file``: a bad file is refused whole, a bad event in a good file is
quarantined. Both stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.config import load_settings
from tests.cli.helpers import run
from tests.sync.conftest import T0, event, full_invoice

EVT = "evt_1QpL8ILkdIwHu7ix"
DEEP = 100_000


def invoice_event(n: int) -> dict[str, Any]:
    obj = full_invoice(f"in_1QpL8HLkdIwHu7ix{n:08d}")
    return event(f"{EVT}{n:08d}", "invoice.payment_failed", obj, T0 + n)


def line(item: Any) -> str:
    return json.dumps(item) + "\n"


def deep_line(n: int) -> str:
    """An event whose metadata nests deeper than Python's JSON parser can follow."""
    text = json.dumps({**invoice_event(n), "metadata": "DEEP"})
    return text.replace('"DEEP"', "[" * DEEP + "]" * DEEP) + "\n"


def row_counts() -> dict[str, int]:
    store = open_store(load_settings())
    try:
        return store.row_counts()
    finally:
        store.close()


def refused(path: Path) -> str:
    """The one error line of a refused file; nothing written."""
    before = row_counts()
    result = run("sync", "--events-file", str(path))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [text for text in result.stderr.splitlines() if not text.startswith("store: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    assert result.stdout == ""
    assert row_counts() == before
    return lines[0]


GOOD = "".join(line(invoice_event(n)) for n in range(3))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("customer_id,kind,amount\ncus_1,booking_fee,1.00\n", "not valid JSON from line 1"),
        ('{"object": "list", "data": [' + json.dumps(full_invoice()) + "]}", "'invoice'"),
        ("[1, 2, 3]", "found integer 1 where a Stripe event was expected"),
        ("null\n" + GOOD, "found null where a Stripe event was expected"),
        (
            "[" + json.dumps(invoice_event(1)) + ", " + json.dumps(invoice_event(2))[:-40],
            "not valid",
        ),
        ("[" * DEEP + "]" * DEEP, "nests too deep to read"),
        (deep_line(1) + GOOD, "nests too deep to read"),
        ("[" + "1" * 5000 + "]", "a number too long to read"),
        ('{"id": "evt_1", \n', "not valid JSON"),
        ('{"id": "evt_1", "amount_due": NaN}\n' + GOOD, "line 1: NaN is not a JSON number"),
        ("[" + json.dumps(invoice_event(1))[:-1] + ', "x": 1e999}]', "too large for JSON"),
    ],
)
def test_a_file_that_is_not_events_is_refused_whole(
    store_env: str, tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "events.json"
    path.write_text(text)
    assert says in refused(path)


def test_a_bad_byte_far_into_a_large_file_writes_nothing(store_env: str, tmp_path: Path) -> None:
    # More than one batch of good events before the bad byte: read whole before applying.
    path = tmp_path / "events.ndjson"
    path.write_bytes(
        "".join(line(invoice_event(n)) for n in range(600)).encode() + b'{"id": "\xff"}\n'
    )
    assert "is not UTF-8 text" in refused(path)


def test_bad_values_among_events_are_quarantined_and_the_rest_applied(
    store_env: str, tmp_path: Path
) -> None:
    pretty = [json.dumps(invoice_event(n), indent=2) + "\n" for n in range(10, 13)]
    truncated = pretty[1][: len(pretty[1]) // 2] + "\n"  # a writer killed mid-event
    parts = [
        line(invoice_event(1)),
        deep_line(2),
        line(invoice_event(3)),
        line(42),
        '{"id": "' + EVT + '00000004", "amount": ' + "9" * 5000 + "}\n",
        line({"object": "invoice", "id": "in_1"}),
        json.dumps(invoice_event(5)) + " trailing\n",
        pretty[0],
        truncated,
        pretty[2],
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(parts))
    result = run("sync", "--events-file", str(path), "--json")
    assert result.exit_code == 4, result.stdout
    body = json.loads(result.stdout)["data"]
    assert (body["events_applied"], body["events_failed"]) == (5, 6), body["failures"]
    reasons = [row["reason"] for row in body["quarantined"]]
    assert reasons == [
        "the JSON from line 2 nests too deep to read",
        "found integer 42 where a Stripe event was expected",
        "the JSON from line 5 holds a number too long to read (4,300+ digits)",
        "found an object of type 'invoice' where a Stripe event was expected",
        reasons[4],
        reasons[5],
    ]
    assert reasons[4].startswith("not valid JSON from line 7: Expecting value")
    assert reasons[5].startswith("not valid JSON from line ")
    store = open_store(load_settings())
    try:
        applied = {f"{EVT}{n:08d}" for n in (1, 3, 5, 10, 12)}
        assert all(store.event_processed(event_id) for event_id in applied)
        assert not store.event_processed(f"{EVT}00000011")
    finally:
        store.close()


def test_numbers_json_cannot_write_are_quarantined_on_every_store(
    store_env: str, tmp_path: Path
) -> None:
    # Python's json reads NaN, Infinity and 1e400; PostgreSQL's jsonb refuses them. Read
    # as JSON defines it, such an event is quarantined on SQLite as on PostgreSQL.
    def spoilt(n: int, value: str) -> str:
        text = json.dumps({**invoice_event(n), "metadata": {"ratio": "X"}})
        return text.replace('"X"', value) + "\n"

    parts = [
        line(invoice_event(1)),
        spoilt(2, "NaN"),
        spoilt(3, "-Infinity"),
        spoilt(4, "1e400"),
        line(invoice_event(5)),
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(parts))
    result = run("sync", "--events-file", str(path), "--json")
    assert result.exit_code == 4, result.stdout
    body = json.loads(result.stdout)["data"]
    assert (body["events_applied"], body["events_failed"]) == (2, 3)
    assert [row["reason"] for row in body["quarantined"]] == [
        "not valid JSON from line 2: NaN is not a JSON number",
        "not valid JSON from line 3: -Infinity is not a JSON number",
        "not valid JSON from line 4: the number 1e400 is too large for JSON",
    ]
