"""``reconcile`` through the CLI on SQLite and PostgreSQL: file, mirror and API sources."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from cloudgreet_billing.domain.alerts import AlertDraft
from cloudgreet_billing.domain.ledger import make_draft
from cloudgreet_billing.domain.mirror import parse_invoice
from tests.cli.helpers import error, run
from tests.finance.factories import NOW, invoice, line
from tests.stripe_fake import FakeStripe, stripe_env

pytestmark = pytest.mark.usefixtures("frozen")

START = NOW - timedelta(days=30)


def add_entry(
    store,
    customer,
    amount,
    *,
    kind="booking_fee",
    currency="usd",
    invoice_id=None,
    occurred_at=datetime(2026, 11, 21, tzinfo=UTC),
    description=None,
):
    entry, _ = store.record_ledger_entry(
        make_draft(
            customer_id=customer,
            kind=kind,
            amount=amount,
            currency=currency,
            occurred_at=occurred_at,
            invoice_id=invoice_id,
            description=description,
        ),
        NOW,
    )
    return entry


def write_json(tmp_path, body, name="invoices.json"):
    path = tmp_path / name
    path.write_text(json.dumps(body), encoding="utf-8")
    return str(path)


def reconcile_json(*args):
    result = run("reconcile", *args, "--json")
    return result.exit_code, json.loads(result.stdout)


def test_file_source_rows_window_and_exit_4_on_a_mismatch(store, tmp_path):
    invoices = [
        # cus_A usd: 1,000 (ex tax of 1,200) + 500 = 1,500; the draft and the void are ignored.
        invoice("in_1", "cus_A", total=1200, total_excluding_tax=1000),
        invoice("in_2", "cus_A", total=500, status="open"),
        invoice("in_3", "cus_A", total=9999, status="draft"),
        invoice("in_4", "cus_A", total=9999, status="void"),
        # cus_A eur: 2,000.
        invoice("in_5", "cus_A", total=2000, currency="eur"),
        # Before the window: ignored.
        invoice("in_6", "cus_A", total=7777, created=START - timedelta(seconds=1)),
        # cus_B only on the Stripe side.
        invoice("in_7", "cus_B", total=300),
    ]
    path = write_json(tmp_path, {"object": "list", "data": invoices, "has_more": False})
    # cus_A usd ledger: 1,600 fees − 100 credit = 1,500 → match.
    add_entry(store, "cus_A", "16.00")
    add_entry(store, "cus_A", "-1.00", kind="credit_adjustment")
    # cus_A eur ledger: 19.80 → variance 20 / 2,000 = 1% → match at the default threshold.
    add_entry(store, "cus_A", "19.80", currency="eur")
    # cus_C only in the ledger; an entry before the window is ignored.
    add_entry(store, "cus_C", "5.00")
    add_entry(store, "cus_C", "99.00", occurred_at=START - timedelta(microseconds=1))

    code, body = reconcile_json("--invoices-file", path)
    assert code == 4
    assert body["data"] == {
        "window": {"from": "2026-10-25T12:00:00Z", "to": "2026-11-24T12:00:00Z"},
        "threshold_pct": 1.0,
        "source": "file",
        "invoices_counted": 4,
        "rows": [
            {
                "customer_id": "cus_A",
                "currency": "eur",
                "stripe_total": 2000,
                "ledger_total": 1980,
                "variance": 20,
                "variance_pct": 1.0,
                "status": "match",
            },
            {
                "customer_id": "cus_A",
                "currency": "usd",
                "stripe_total": 1500,
                "ledger_total": 1500,
                "variance": 0,
                "variance_pct": 0.0,
                "status": "match",
            },
            {
                "customer_id": "cus_B",
                "currency": "usd",
                "stripe_total": 300,
                "ledger_total": 0,
                "variance": 300,
                "variance_pct": 100.0,
                "status": "mismatch",
            },
            {
                "customer_id": "cus_C",
                "currency": "usd",
                "stripe_total": 0,
                "ledger_total": 500,
                "variance": -500,
                "variance_pct": 100.0,
                "status": "mismatch",
            },
        ],
        "mismatches": 2,
        "past_due_invoices": [],
        "open_alerts": [],
    }


def test_threshold_flag_decides_and_everything_matching_exits_0(store, tmp_path):
    path = write_json(tmp_path, [invoice("in_1", "cus_A", total=10_000)])  # a bare JSON list
    add_entry(store, "cus_A", "98.99")  # 101 / 10,000 = 1.01%
    code, body = reconcile_json("--invoices-file", path)
    assert (code, body["data"]["rows"][0]["variance_pct"]) == (4, 1.01)
    code, body = reconcile_json("--invoices-file", path, "--threshold", "1.01")
    assert (code, body["data"]["mismatches"]) == (0, 0)


def test_offline_reads_the_mirror(store):
    for raw in (
        invoice("in_1", "cus_A", total=4000),
        invoice("in_2", "cus_A", total=999, status="void"),
        invoice("in_3", "cus_A", total=1000, status="open"),
    ):
        store.upsert_invoice(parse_invoice(raw), NOW, NOW)
    add_entry(store, "cus_A", "50.00")
    code, body = reconcile_json("--offline")
    assert code == 0
    assert body["data"]["source"] == "mirror"
    assert body["data"]["invoices_counted"] == 2
    assert body["data"]["rows"] == [
        {
            "customer_id": "cus_A",
            "currency": "usd",
            "stripe_total": 5000,
            "ledger_total": 5000,
            "variance": 0,
            "variance_pct": 0.0,
            "status": "match",
        },
    ]


def test_customer_trace_explains_the_variance(store, tmp_path):
    invoices = [
        invoice("in_ok", "cus_A", total=1000, created=datetime(2026, 11, 2, tzinfo=UTC)),
        invoice("in_short", "cus_A", total=2000, created=datetime(2026, 11, 3, tzinfo=UTC)),
        invoice(
            "in_missing",
            "cus_A",
            total=700,
            created=datetime(2026, 11, 4, tzinfo=UTC),
            lines=[line("il_1", 500, "Pro plan"), line("il_2", 200, "3 bookings")],
        ),
        invoice("in_late", "cus_A", total=300, created=datetime(2026, 11, 5, tzinfo=UTC)),
        invoice("in_other", "cus_B", total=5000),
    ]
    path = write_json(tmp_path, invoices)
    add_entry(store, "cus_A", "10.00", invoice_id="in_ok")
    add_entry(store, "cus_A", "15.00", invoice_id="in_short")
    stray = add_entry(store, "cus_A", "4.00", description="=SUM(A1)")
    add_entry(store, "cus_A", "3.00", invoice_id="in_late", occurred_at=NOW + timedelta(days=1))
    code, body = reconcile_json("--invoices-file", path, "--customer", "cus_A")
    data = body["data"]
    assert code == 4
    # stripe 4,000; ledger 1,000 + 1,500 + 400 = 2,900; 1,100 = 700 + 300 + 500 − 400.
    assert [(r["customer_id"], r["variance"]) for r in data["rows"]] == [("cus_A", 1100)]
    trace = data["trace"]
    assert [e["id"] for e in trace["unmatched_entries"]] == [stray.id]
    assert trace["unmatched_entries"][0]["description"] == "=SUM(A1)"
    assert trace["unmatched_invoice_lines"] == [
        {
            "invoice_id": "in_missing",
            "line_id": "il_1",
            "description": "Pro plan",
            "amount": 500,
            "currency": "usd",
        },
        {
            "invoice_id": "in_missing",
            "line_id": "il_2",
            "description": "3 bookings",
            "amount": 200,
            "currency": "usd",
        },
        {
            "invoice_id": "in_late",
            "line_id": None,
            "description": "NUM-late",
            "amount": 300,
            "currency": "usd",
        },
    ]
    assert trace["invoices_differing"] == [
        {
            "invoice_id": "in_short",
            "currency": "usd",
            "stripe_amount": 2000,
            "ledger_amount": 1500,
            "variance": 500,
        },
    ]
    assert trace["ledger_outside_window"] == [
        {"invoice_id": "in_late", "currency": "usd", "amount": 300},
    ]
    human = run("reconcile", "--invoices-file", path, "--customer", "cus_A")
    assert human.exit_code == 4
    assert "in_short" in human.stdout and "MISMATCH" in human.stdout
    assert "fall outside the window" in human.stdout


def test_past_due_invoices_and_open_alerts_are_listed_alongside(store, tmp_path):
    overdue = invoice(
        "in_due",
        "cus_A",
        total=800,
        status="open",
        due_date=NOW - timedelta(days=2),
        created=datetime(2026, 11, 1, tzinfo=UTC),
    )
    failed = invoice("in_failed", "cus_B", total=600, status="open", attempt_count=1)
    not_yet = invoice(
        "in_fresh", "cus_A", total=100, status="open", due_date=NOW + timedelta(days=5)
    )
    for raw in (overdue, failed, not_yet):
        store.upsert_invoice(parse_invoice(raw), NOW, NOW)
    store.raise_alert(
        AlertDraft(
            type="invoice_failed",
            dedupe_key="invoice_failed:in_failed",
            customer_id="cus_B",
            invoice_id="in_failed",
            amount_due=600,
            currency="usd",
        ),
        actor="tester@ci",
        now=NOW,
    )
    code, body = reconcile_json("--offline")
    assert code == 4  # both customers' invoices are not in the ledger
    # Oldest due first; an invoice charged automatically is due when it was created.
    assert [i["id"] for i in body["data"]["past_due_invoices"]] == ["in_failed", "in_due"]
    assert body["data"]["past_due_invoices"][1] == {
        "id": "in_due",
        "customer_id": "cus_A",
        "number": "NUM-due",
        "amount_due": 800,
        "amount_remaining": 800,
        "currency": "usd",
        "due_date": "2026-11-22T12:00:00Z",
        "attempt_count": 0,
        "first_failed_at": None,
        "hosted_invoice_url": "https://invoice.stripe.com/i/in_due",
    }
    (alert,) = body["data"]["open_alerts"]
    assert (alert["type"], alert["invoice_id"], alert["amount_due"]) == (
        "invoice_failed",
        "in_failed",
        600,
    )


def test_a_past_due_invoice_only_in_the_file_is_listed(store, tmp_path):
    path = write_json(
        tmp_path,
        [invoice("in_x", "cus_A", total=100, status="open", due_date=NOW - timedelta(hours=1))],
    )
    _, body = reconcile_json("--invoices-file", path)
    assert [i["id"] for i in body["data"]["past_due_invoices"]] == ["in_x"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--invoices-file", "missing.json"], "is not a file"),
        (["--invoices-file", "x.json", "--offline"], "give one"),
        (["--threshold", "lots"], "is not a number"),
        (["--threshold", "-1"], "0 or more"),
        (["--customer", "acme"], "not a Stripe customer id"),
    ],
)
def test_bad_input_exits_2(store_env, args, message):
    result = run("reconcile", *args, "--offline" if "--invoices-file" not in args else "--json")
    assert result.exit_code == 2
    assert message in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"object": "invoice"}', "neither a list of invoices nor an API list page"),
        ('[{"id": "in_1", "customer": "cus_A", "status": "paid"}]', "item 0"),
    ],
)
def test_malformed_invoices_files_exit_2(store_env, tmp_path, body, message):
    path = tmp_path / "bad.json"
    path.write_text(body)
    result = run("reconcile", "--invoices-file", str(path), "--json")
    assert result.exit_code == 2
    assert message in error(result)["message"]


def test_api_source_lists_100_per_page_and_mirrors_every_invoice(
    store, fake_stripe: FakeStripe, monkeypatch
):
    stripe_env(monkeypatch, fake_stripe)
    count = 250
    invoices = [
        invoice(
            f"in_{n:04d}", f"cus_{n % 7}", total=100 + n, created=NOW - timedelta(days=29, hours=-n)
        )
        for n in range(count)
    ]
    old = invoice("in_old", "cus_0", total=1, created=START - timedelta(days=1))
    fake_stripe.paginate("/v1/invoices", [*invoices, old])
    code, body = reconcile_json()
    assert code == 4  # nothing in the ledger
    assert body["data"]["source"] == "api"
    assert body["data"]["invoices_counted"] == count
    assert sum(r["stripe_total"] for r in body["data"]["rows"]) == sum(
        100 + n for n in range(count)
    )
    listed = fake_stripe.requests_to("GET", "/v1/invoices")
    assert len(listed) == math.ceil(count / 100)
    assert len(fake_stripe.requests) == len(listed)  # no call per invoice, nothing else
    assert {r.query["limit"] for r in listed} == {"100"}
    assert listed[0].query["created[gte]"] == str(int(START.timestamp()))
    assert listed[0].query["created[lt]"] == str(int(NOW.timestamp()))
    assert store.get_invoice("in_0249").total == 349
    assert store.get_invoice("in_old") is None
    # The mirror now holds the same figures.
    code, offline = reconcile_json("--offline")
    assert offline["data"]["rows"] == body["data"]["rows"]


def test_api_source_without_a_key_says_how_to_work_offline(store_env):
    result = run("reconcile", "--json")
    assert result.exit_code == 2
    assert "STRIPE_SECRET_KEY" in error(result)["message"]
