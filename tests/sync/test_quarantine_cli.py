"""Quarantine through the CLI: sync lists it and exits 4; operators retry or dismiss it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from freezegun import freeze_time

from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.config import load_settings
from tests.cli.helpers import data, error, run
from tests.stripe_fake import FakeStripe
from tests.sync.conftest import T0, event, full_invoice, subscription

EVT = "evt_1QpL8ILkdIwHu7ix"


def invoice_event(n: int, **fields: Any) -> dict[str, Any]:
    obj = {**full_invoice(f"in_1QpL8HLkdIwHu7ix{n:08d}"), **fields}
    return event(f"{EVT}{n:08d}", "invoice.payment_failed", obj, T0 + n)


def ndjson(events: list[Any]) -> str:
    return "".join(json.dumps(item) + "\n" for item in events)


def quarantined_rows() -> list[Any]:
    store = open_store(load_settings())
    try:
        return store.list_quarantined(statuses=None, limit=None)
    finally:
        store.close()


def test_sync_quarantines_bad_events_and_exits_4_until_each_is_settled(
    store_env: str, tmp_path: Path
) -> None:
    events = [invoice_event(n) for n in range(6)]
    events[2]["data"]["object"]["amount_due"] = [1]
    events[4]["data"]["object"]["currency"] = "US"
    path = tmp_path / "events.ndjson"
    path.write_text(ndjson(events))

    result = run("sync", "--events-file", str(path))
    assert result.exit_code == 4
    assert "6 events: 4 applied" in result.stdout
    assert "2 events in quarantine, not applied (the others were):" in result.stdout
    assert f"{EVT}00000002  invoice in_1QpL8HLkdIwHu7ix00000002 field amount_due" in result.stdout
    assert "quarantine retry --all" in result.stdout
    assert "unexpected" not in result.stdout + result.stderr

    # Still exit 4 on a sync with nothing new: the quarantine waits for a person.
    again = run("sync", "--events-file", "-", "--json", input="")
    assert again.exit_code == 4
    assert json.loads(again.stdout)["data"]["quarantined_count"] == 2

    listed = data(run("quarantine", "list", "--json"))
    assert [row["event_id"] for row in listed] == [f"{EVT}00000002", f"{EVT}00000004"]
    assert set(listed[0]) == {
        "id",
        "event_id",
        "type",
        "status",
        "reason",
        "source",
        "stripe_created",
        "livemode",
        "times_seen",
        "first_seen_at",
        "last_seen_at",
        "resolved_at",
        "resolved_by",
        "resolution",
    }
    first, second = (str(row["id"]) for row in listed)

    shown = data(run("quarantine", "show", first, "--json"))
    assert shown["payload"] == events[2]
    assert shown["stripe_created"] == "2026-05-28T20:26:42Z"
    assert data(run("quarantine", "show", f"{EVT}00000004", "--json"))["id"] == int(second)

    still = run("quarantine", "retry", first, "--json")
    assert still.exit_code == 4
    assert json.loads(still.stdout)["data"]["results"][0]["status"] == "quarantined"

    refused = run("quarantine", "dismiss", first, "--json")
    assert refused.exit_code == 3
    assert error(refused)["code"] == "refused"
    dismissed = data(
        run("quarantine", "dismiss", first, "--reason", "test fixture", "--yes", "--json")
    )
    assert (dismissed["status"], dismissed["resolution"], dismissed["resolved_by"]) == (
        "dismissed",
        "test fixture",
        "tester@ci",
    )
    twice = run("quarantine", "dismiss", first, "--yes", "--json")
    assert (twice.exit_code, error(twice)["code"]) == (2, "already_settled")

    # The currency bug "fixed": the operator corrects nothing, but a redelivery with a
    # good payload settles the row by itself.
    data(run("sync", "--events-file", "-", "--json", input=ndjson([invoice_event(4)])))
    assert data(run("quarantine", "list", "--json")) == []
    assert data(run("sync", "--events-file", "-", "--json", input=""))["quarantined_count"] == 0

    trail = data(run("quarantine", "show", first, "--json"))["audit_trail"]
    assert [(r["actor"], r["action"], r["outcome"]) for r in trail] == [
        ("tester@ci", "quarantine.retry", "quarantined"),
        ("tester@ci", "quarantine.dismiss", "refused"),
        ("tester@ci", "quarantine.dismiss", "dismissed"),
    ]
    everything = data(run("quarantine", "list", "--status", "all", "--json"))
    assert [row["status"] for row in everything] == ["dismissed", "applied"]


def test_retry_all_applies_what_the_code_of_the_day_accepts(
    store_env: str, monkeypatch: Any
) -> None:
    # A subscription status this version does not know yet: quarantined, then let through
    # by an upgrade (here: the status vocabulary extended, as a new release would).
    update = event(
        f"{EVT}00000002",
        "customer.subscription.updated",
        {**subscription("sub_1QpL7xLkdIwHu7ixWq3bN2Zs"), "status": "suspended"},
        T0 + 2,
    )
    events = [invoice_event(1), update, invoice_event(3)]
    assert run("sync", "--events-file", "-", input=ndjson(events)).exit_code == 4

    from cloudgreet_billing.domain import mirror

    with monkeypatch.context() as patched:
        patched.setattr(
            mirror, "SUBSCRIPTION_STATUSES", {*mirror.SUBSCRIPTION_STATUSES, "suspended"}
        )
        body = data(run("quarantine", "retry", "--all", "--json"))
    assert (body["retried"], body["applied"], body["quarantined"]) == (1, 1, 0)
    assert (body["results"][0]["event_id"], body["results"][0]["status"]) == (
        f"{EVT}00000002",
        "applied",
    )
    store = open_store(load_settings())
    try:
        assert store.get_subscription("sub_1QpL7xLkdIwHu7ixWq3bN2Zs").status == "suspended"
        assert store.event_processed(f"{EVT}00000002")
    finally:
        store.close()
    assert data(run("quarantine", "retry", "--all", "--json"))["retried"] == 0
    assert run("quarantine", "retry", "--json").exit_code == 2  # neither ids nor --all
    applied = str(quarantined_rows()[0].id)
    again = run("quarantine", "retry", applied, "--json")
    assert (again.exit_code, error(again)["code"]) == (2, "already_settled")


def test_doctor_and_dashboard_show_the_quarantine_and_how_to_act(store_env: str) -> None:
    with freeze_time("2026-05-29T09:00:00Z"):
        run("sync", "--events-file", "-", input=ndjson([invoice_event(1, attempted="yes")]))
        checks = {c["name"]: c for c in data(run("doctor", "--json"))["checks"]}
        board = data(run("dashboard", "--json"))
        human = run("dashboard").stdout
    assert checks["quarantine"]["status"] == "warn"
    assert checks["quarantine"]["detail"] == (
        "1 Stripe event could not be applied (oldest since 2026-05-29 09:00 UTC): see "
        "`quarantine list`, then `quarantine retry ID` after a fix or `quarantine dismiss ID`"
    )
    assert board["quarantined_events"] == 1
    assert any("quarantine list" in warning for warning in board["warnings"])
    assert "quarantined events" in human

    (row,) = quarantined_rows()
    data(run("quarantine", "dismiss", str(row.id), "--yes", "--json"))
    checks = {c["name"]: c for c in data(run("doctor", "--json"))["checks"]}
    assert checks["quarantine"]["status"] == "ok"
    assert data(run("dashboard", "--json"))["quarantined_events"] == 0


def test_the_events_api_cursor_moves_past_quarantined_events(
    fake: FakeStripe, store_env: str
) -> None:
    events = [invoice_event(n) for n in range(1, 6)]
    events[0]["data"]["object"]["total"] = 2**64  # the oldest event is bad
    fake.paginate("/v1/events", events)
    result = run("sync", "--json")
    assert result.exit_code == 4
    body = json.loads(result.stdout)["data"]
    assert (body["events_applied"], body["events_failed"]) == (4, 1)
    assert body["cursor"] == "2026-05-28T20:26:45Z"  # the newest event's second
    (row,) = body["quarantined"]
    assert (row["source"], row["event_id"]) == ("api", f"{EVT}00000001")
    run("sync", "--json")
    assert fake.requests_to("GET", "/v1/events")[-1].query["created[gte]"] == str(T0 + 5)


def test_ids_that_name_nothing_or_are_not_ids_exit_2(store_env: str) -> None:
    for ref, code in (
        ("7", "not_found"),
        (f"{EVT}00000009", "not_found"),
        ("99999999999999999999999", "bad_input"),
        ("0", "bad_input"),
        ("in_1", "bad_input"),
    ):
        result = run("quarantine", "show", ref, "--json")
        assert (result.exit_code, error(result)["code"]) == (2, code), ref
    assert run("quarantine", "list", "--status", "nope").exit_code == 2
