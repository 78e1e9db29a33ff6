"""``sync`` and ``alerts`` through the CLI, on both stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from tests.stripe_fake import FakeStripe
from tests.sync.conftest import T0, customer, event, failed, invoice, paid, subscription

runner = CliRunner()


def cli(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def data(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["data"]


SYNC_ZERO = {
    "events_seen": 0,
    "events_applied": 0,
    "events_skipped": 0,
    "alerts_opened": 0,
    "alerts_resolved": 0,
    "dunning_scheduled": 0,
    "dunning_canceled": 0,
    "cursor": None,
    "events_duplicate": 0,
    "events_failed": 0,
    "failures": [],
    "invoices_backfilled": 0,
    "subscriptions_backfilled": 0,
    "quarantined_count": 0,
    "quarantined": [],
    "customers_backfilled": 0,
    "objects_unreadable": 0,
    "unreadable": [],
}


def test_events_file_in_every_shape(store_env: str, tmp_path: Path) -> None:
    one = failed("evt_1", "in_1", 1, T0)
    (tmp_path / "one.json").write_text(json.dumps(one, indent=2))
    (tmp_path / "list.json").write_text(json.dumps([one, failed("evt_2", "in_2", 1, T0)]))
    page = {"object": "list", "data": [failed("evt_3", "in_3", 1, T0)], "has_more": False}
    (tmp_path / "page.json").write_text(json.dumps(page))

    assert data(cli("sync", "--events-file", str(tmp_path / "one.json"), "--json")) == {
        **SYNC_ZERO,
        "events_seen": 1,
        "events_applied": 1,
        "alerts_opened": 1,
        "dunning_scheduled": 3,
    }
    assert (
        data(cli("sync", "--events-file", str(tmp_path / "list.json"), "--json"))[
            "events_duplicate"
        ]
        == 1
    )
    assert (
        data(cli("sync", "--events-file", str(tmp_path / "page.json"), "--json"))["alerts_opened"]
        == 1
    )
    ndjson = (
        "\n".join(
            json.dumps(e)
            for e in [
                paid("evt_4", "in_1", T0 + 9),
                event("evt_5", "charge.succeeded", {"id": "ch_1", "object": "charge"}, T0),
            ]
        )
        + "\n"
    )
    assert data(cli("sync", "--events-file", "-", "--json", input=ndjson)) == {
        **SYNC_ZERO,
        "events_seen": 2,
        "events_applied": 1,
        "events_skipped": 1,
        "alerts_resolved": 1,
        "dunning_canceled": 3,
    }
    listed = data(cli("alerts", "list", "--json"))
    assert sorted(a["invoice_id"] for a in listed) == ["in_2", "in_3"]


def test_a_bad_event_in_a_file_exits_4_and_names_it(store_env: str) -> None:
    bad = failed("evt_9", "in_9", 1, T0)
    bad["data"]["object"]["status"] = "exploded"
    lines = json.dumps(bad) + "\n" + json.dumps(failed("evt_1", "in_1", 1, T0)) + "\n"
    result = cli("sync", "--events-file", "-", "--json", input=lines)
    assert result.exit_code == 4
    body = json.loads(result.stdout)["data"]
    assert (body["events_applied"], body["events_failed"]) == (1, 1)
    reason = (
        "invoice in_9 field status: expected one of draft, open, paid, uncollectible, void, "
        "got string 'exploded'"
    )
    assert body["failures"] == [f"evt_9: {reason}"]
    assert body["quarantined_count"] == 1
    (row,) = body["quarantined"]
    assert (row["event_id"], row["status"], row["reason"], row["source"]) == (
        "evt_9",
        "quarantined",
        reason,
        "file",
    )


def test_malformed_json_is_bad_input(store_env: str) -> None:
    result = cli("sync", "--events-file", "-", "--json", input='{"id": "evt_1", \n')
    assert result.exit_code == 2
    assert "not valid JSON" in json.loads(result.stdout)["error"]["message"]


def test_api_sync_moves_the_cursor_and_is_idempotent(fake: FakeStripe, store_env: str) -> None:
    fake.paginate("/v1/events", [failed(f"evt_{n}", f"in_{n}", 1, T0 + n) for n in range(1, 4)])
    first = data(cli("sync", "--json"))
    assert (first["events_applied"], first["alerts_opened"], first["cursor"]) == (
        3,
        3,
        "2026-05-28T20:26:43Z",
    )
    second = data(cli("sync", "--json"))
    assert (second["events_applied"], second["events_duplicate"]) == (0, 1)
    assert fake.requests_to("GET", "/v1/events")[-1].query["created[gte]"] == str(T0 + 3)


def test_backfill_lists_customers_invoices_and_subscriptions(
    fake: FakeStripe, store_env: str
) -> None:
    fake.paginate("/v1/customers", [customer(f"cus_{n}", created=T0 - n) for n in range(101)])
    fake.paginate("/v1/invoices", [invoice(f"in_{n}", created=T0 - n) for n in range(130)])
    fake.paginate("/v1/subscriptions", [subscription()])
    body = data(cli("sync", "--backfill", "--json"))
    assert (
        body["customers_backfilled"],
        body["invoices_backfilled"],
        body["subscriptions_backfilled"],
    ) == (101, 130, 1)
    assert len(fake.requests_to("GET", "/v1/invoices")) == 2
    assert [r.query for r in fake.requests_to("GET", "/v1/customers")] == [
        {"limit": "100"},
        {"limit": "100", "starting_after": "cus_99"},
    ]
    human = cli("sync", "--backfill")
    assert human.exit_code == 0, human.output
    assert "backfilled 101 customers, 130 invoices and 1 subscription" in human.stdout


@freeze_time("2026-05-29T09:00:00Z")
def test_alert_ack_note_resolve_show(store_env: str) -> None:
    data(
        cli(
            "sync", "--events-file", "-", "--json", input=json.dumps(failed("evt_1", "in_1", 1, T0))
        )
    )
    (alert,) = data(cli("alerts", "list", "--json"))
    assert alert == {
        "id": alert["id"],
        "type": "invoice_failed",
        "status": "open",
        "customer_id": "cus_1",
        "invoice_id": "in_1",
        "amount_due": 4900,
        "currency": "usd",
        "stripe_event_id": "evt_1",
        "created_at": "2026-05-29T09:00:00Z",
        "updated_at": "2026-05-29T09:00:00Z",
        "resolved_at": None,
        "resolution": None,
        "notes": [],
    }
    aid = str(alert["id"])
    assert data(cli("alerts", "ack", aid, "--json"))["status"] == "acknowledged"
    noted = data(cli("alerts", "note", aid, "called the owner", "--json"))
    assert noted["notes"] == [
        {"author": "tester@ci", "body": "called the owner", "created_at": "2026-05-29T09:00:00Z"}
    ]
    resolved = data(cli("alerts", "resolve", aid, "--reason", "paid by check", "--yes", "--json"))
    assert (resolved["status"], resolved["resolution"]) == ("resolved", "paid by check")
    assert data(cli("alerts", "list", "--json")) == []
    assert len(data(cli("alerts", "list", "--status", "all", "--json"))) == 1

    shown = data(cli("alerts", "show", aid, "--json"))
    assert shown["invoice"]["id"] == "in_1" and shown["invoice"]["status"] == "open"
    assert [s["channel"] for s in shown["dunning_steps"]] == ["email", "sms", "email"]
    assert [(a["actor"], a["action"]) for a in shown["audit_trail"]] == [
        ("stripe:file", "alert.open"),
        ("tester@ci", "alert.ack"),
        ("tester@ci", "alert.note"),
        ("tester@ci", "alert.resolve"),
    ]
    ack_again = cli("alerts", "ack", aid, "--json")
    assert ack_again.exit_code == 2
    missing = cli("alerts", "show", "999", "--json")
    assert (missing.exit_code, json.loads(missing.stdout)["error"]["code"]) == (2, "not_found")
    assert cli("alerts", "list", "--type", "nope", "--json").exit_code == 2


def test_ledger_thresholds_open_alerts(store_env: str, tmp_path: Path, monkeypatch: Any) -> None:
    config = tmp_path / "billing.toml"
    config.write_text(
        '[[thresholds]]\nname = "fees-per-day"\nkind = "booking_fee"\ncurrency = "usd"\n'
        'max_amount = "10.00"\n'
    )
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    rows = "customer_id,kind,amount,currency,occurred_at\n" + "".join(
        f"cus_{c},booking_fee,4.00,usd,2026-05-0{d}T10:00:00Z\n" for c in (1, 2) for d in (1, 1, 2)
    )
    csv = tmp_path / "fees.csv"
    csv.write_text(
        rows.replace(
            "cus_2,booking_fee,4.00,usd,2026-05-01", "cus_2,booking_fee,1.00,usd,2026-05-01"
        )
    )
    assert cli("ledger", "import", str(csv), "--json").exit_code == 0
    assert data(cli("alerts", "list", "--json")) == []  # 8.00 a day: under the limit
    added = cli(
        "ledger",
        "add",
        "--customer",
        "cus_1",
        "--kind",
        "booking_fee",
        "--amount",
        "3",
        "--occurred-at",
        "2026-05-01T12:00:00Z",
        "--json",
    )
    assert added.exit_code == 0
    (alert,) = data(cli("alerts", "list", "--type", "threshold_exceeded", "--json"))
    assert (alert["customer_id"], alert["amount_due"], alert["currency"]) == ("cus_1", 1100, "usd")


def test_every_sync_source_records_when_it_last_finished(fake: FakeStripe, store_env: str) -> None:
    fake.paginate("/v1/events", [])
    fake.paginate("/v1/customers", [])
    fake.paginate("/v1/invoices", [])
    fake.paginate("/v1/subscriptions", [])
    for args, moment in (
        (("sync", "--events-file", "-"), "2026-11-20T08:00:00Z"),
        (("sync",), "2026-11-21T08:00:00Z"),
        (("sync", "--backfill"), "2026-11-22T08:00:00Z"),
    ):
        with freeze_time(moment):
            data(cli(*args, "--json", input="[]"))
            board = data(cli("dashboard", "--json"))
        assert board["last_sync_at"] == moment
    with freeze_time("2026-11-24T09:00:00Z"):
        board = data(cli("dashboard", "--json"))
    assert any("older than a day" in warning for warning in board["warnings"])
