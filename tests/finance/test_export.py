"""``export-csv`` on SQLite and PostgreSQL: format, formula safety, atomic files, memory."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from cloudgreet_billing.adapters.store import sqlite as sqlite_store
from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.alerts import AlertDraft
from cloudgreet_billing.domain.dunning import StepDraft
from cloudgreet_billing.domain.export import HEADERS, ledger_line
from cloudgreet_billing.domain.ledger import LedgerDraft, make_draft
from cloudgreet_billing.domain.mirror import parse_invoice
from cloudgreet_billing.domain.reconciliation import Window
from cloudgreet_billing.services import export as export_service
from tests.cli.helpers import data, error, run
from tests.finance.factories import NOW, invoice

pytestmark = pytest.mark.usefixtures("frozen")

LEDGER_HEADER = (
    "id,occurred_at,customer_id,kind,amount_minor,amount_major,currency,invoice_id,"
    "description,external_id,created_at\n"
)
TRICKY = [
    '=HYPERLINK("http://x")',
    "+1",
    "-5 credit",
    "@SUM(A1)",
    "\tindented",
    "\rcarriage",
    "a,b",
    'say "hi"',
    "two\nlines",
    "",
    "café €5",
    "'already quoted",
    " leading space",
    "mid=dle",
]


def entry(
    store,
    customer,
    amount,
    *,
    kind="booking_fee",
    currency="usd",
    days_ago=1.0,
    description=None,
    external_id=None,
    invoice_id=None,
):
    created, _ = store.record_ledger_entry(
        make_draft(
            customer_id=customer,
            kind=kind,
            amount=amount,
            currency=currency,
            occurred_at=NOW - timedelta(days=days_ago),
            description=description,
            external_id=external_id,
            invoice_id=invoice_id,
        ),
        NOW,
    )
    return created


def test_text_cells_are_neutralised_and_quoted():
    from cloudgreet_billing.domain.export import major_cell, text_cell

    assert [text_cell(t) for t in ("=1", "+1", "-1", "@a", "\tx", "\rx", "ok", None, "")] == [
        "'=1",
        "'+1",
        "'-1",
        "'@a",
        "'\tx",
        '"\'\rx"',
        "ok",
        "",
        "",
    ]
    assert text_cell('a "b", c') == '"a ""b"", c"'
    assert major_cell(-5, "usd") == "-0.05"


def test_default_is_the_ledger_over_the_last_seven_days_on_stdout(store):
    entry(
        store,
        "cus_A",
        "12.34",
        description="=cmd|' /C calc'!A0",
        invoice_id="in_1",
        external_id="ext-1",
        days_ago=6.5,
    )
    entry(store, "cus_A", "-0.05", kind="credit_adjustment", description="-refund, partial")
    entry(store, "cus_B", "500", currency="jpy", days_ago=0.5)
    entry(store, "cus_C", "1.234", currency="kwd", days_ago=0.25)
    entry(store, "cus_A", "99.00", days_ago=7.01)  # outside the 7 days
    result = run("export-csv")
    assert result.exit_code == 0
    assert result.stdout == (
        LEDGER_HEADER + "1,2026-11-18T00:00:00.000000Z,cus_A,booking_fee,1234,12.34,usd,in_1,"
        "'=cmd|' /C calc'!A0,ext-1,2026-11-24T12:00:00.000000Z\n"
        + "2,2026-11-23T12:00:00.000000Z,cus_A,credit_adjustment,-5,-0.05,usd,,"
        '"\'-refund, partial",,2026-11-24T12:00:00.000000Z\n'
        + "3,2026-11-24T00:00:00.000000Z,cus_B,booking_fee,500,500,jpy,,,,"
        "2026-11-24T12:00:00.000000Z\n"
        + "4,2026-11-24T06:00:00.000000Z,cus_C,booking_fee,1234,1.234,kwd,,,,"
        "2026-11-24T12:00:00.000000Z\n"
    )
    assert "exported 4 ledger rows" in result.stderr
    # Amounts stay numbers a spreadsheet can sum; text reads back as written, plus the '.
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sum(int(row["amount_minor"]) for row in rows if row["currency"] == "usd") == 1229
    assert rows[1]["description"] == "'-refund, partial"


def test_database_built_lines_equal_the_python_specification(store):
    for n, text in enumerate(TRICKY):
        # Drafts built directly: other writers may store what `ledger add` would strip.
        store.record_ledger_entry(
            LedgerDraft(
                customer_id=f"cus_{n}",
                kind="booking_fee",
                amount=n * 101,
                currency="usd",
                occurred_at=NOW - timedelta(days=(len(TRICKY) - n) / 10),
                description=text,
                external_id=text or None,
            ),
            NOW,
        )
    entry(store, "cus_neg", "-123456.78", kind="credit_adjustment", days_ago=0.05)
    entry(store, "cus_zero", "0", currency="jpy", days_ago=0.05)
    entry(store, "cus_sub", "-0.001", kind="credit_adjustment", currency="bhd", days_ago=0.05)
    at_micro = make_draft(
        customer_id="cus_us",
        kind="booking_fee",
        amount="1.00",
        currency="usd",
        occurred_at=NOW - timedelta(microseconds=7),
    )
    store.record_ledger_entry(at_micro, NOW + timedelta(microseconds=123))
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    expected = "".join(ledger_line(e) for e in store.stream_ledger(window))
    built = "".join(text for text, _ in store.ledger_csv_chunks(window))
    assert built == expected
    assert sum(rows for _, rows in store.ledger_csv_chunks(window)) == len(TRICKY) + 4
    parsed = list(csv.reader(io.StringIO(built)))
    descriptions = [row[8] for row in parsed[: len(TRICKY)]]
    assert descriptions == [
        "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text for text in TRICKY
    ]
    assert "2026-11-24T11:59:59.999993Z" in built


#: Free text that a line needs no quotes for (formulas are neutralised all the same) …
PLAIN_TEXTS = [None, "", "booking 7", "=SUM(A1)", "+1", "-5 credit", "@me", "\tx", "café €5", "x'"]
#: … and text it must quote.
QUOTED_TEXTS = ["a,b", 'say "hi"', "two\nlines", "\rcr", "=1,2"]


def test_paged_export_keeps_the_order_and_every_row_once(store, monkeypatch):
    """SQLite builds the export a page at a time. Pages of 4 rows put page boundaries inside
    groups of rows that tie on everything but the id (inserted out of order), and between
    pages with and without cells to quote; the lines are exactly ``ledger_line``'s, in
    the export's order."""
    monkeypatch.setattr(sqlite_store, "EXPORT_PAGE_ROWS", 4)
    kinds = ("booking_fee", "subscription", "credit_adjustment")
    for n in range(45):
        group = (n * 7) % 15  # 15 groups of 3 equal keys, each group's rows inserted apart
        kind = kinds[group % 3]
        store.record_ledger_entry(
            LedgerDraft(
                customer_id=f"cus_{group % 2}",
                kind=kind,
                amount=(group % 5) * 123_456 * (-1 if kind == "credit_adjustment" else 1),
                currency=("usd", "jpy", "kwd", "eur")[group % 4],
                occurred_at=NOW - timedelta(hours=1 + group % 6, microseconds=group % 2),
                invoice_id=f"in_{n}" if n % 3 else None,
                description=QUOTED_TEXTS[n % 5] if n in (9, 10, 30) else PLAIN_TEXTS[n % 10],
                external_id=f"=ext-{n}" if n % 4 == 1 else None,
            ),
            NOW,
        )
    window = Window(start=NOW - timedelta(days=1), end=NOW)
    chunks = list(store.ledger_csv_chunks(window))
    entries = list(store.stream_ledger(window))
    built = "".join(text for text, _ in chunks)
    assert built == "".join(ledger_line(entry) for entry in entries)
    ordered = sorted(
        entries,
        key=lambda e: (e.occurred_at, e.customer_id, e.currency, e.amount, e.kind, e.id),
    )
    assert [int(row[0]) for row in csv.reader(io.StringIO(built))] == [e.id for e in ordered]
    assert sorted(e.id for e in entries) == list(range(1, 46))
    assert sum(rows for _, rows in chunks) == 45
    if store.backend == "sqlite":
        assert [rows for _, rows in chunks] == [4] * 11 + [1]


@pytest.mark.parametrize("fault", ["a,b", 'say "hi"', "two\nlines", "cr\rin", "\rfirst", "\n"])
def test_each_cell_that_needs_quotes_is_found_on_its_own(store, monkeypatch, fault):
    """One cell needing quotes, alone in its page, makes that page (and the next one,
    which needs none) be built line by line; both come out exactly as specified."""
    monkeypatch.setattr(sqlite_store, "EXPORT_PAGE_ROWS", 2)
    for n in range(7):
        store.record_ledger_entry(
            LedgerDraft(
                customer_id="cus_A",
                kind="booking_fee",
                amount=n,
                currency="usd",
                occurred_at=NOW - timedelta(hours=10 - n),
                external_id=fault if n == 2 else f"=x{n}",
                description=fault if n == 3 else "plain",
            ),
            NOW,
        )
    window = Window(start=NOW - timedelta(days=1), end=NOW)
    built = "".join(text for text, _ in store.ledger_csv_chunks(window))
    assert built == "".join(ledger_line(e) for e in store.stream_ledger(window))
    rows = list(csv.reader(io.StringIO(built)))
    assert [row[8:10] for row in rows[2:4]] == [
        ["plain", "'" + fault if fault[0] == "\r" else fault],
        ["'" + fault if fault[0] == "\r" else fault, "'=x3"],
    ]


def test_paged_export_of_an_empty_window_and_of_exactly_full_pages(store, monkeypatch):
    monkeypatch.setattr(sqlite_store, "EXPORT_PAGE_ROWS", 2)
    window = Window(start=NOW - timedelta(days=1), end=NOW)
    assert list(store.ledger_csv_chunks(window)) == []
    for n in range(4):
        entry(store, "cus_A", f"{n}.00", days_ago=0.5)
    entry(store, "cus_A", "9.00", days_ago=2)  # outside the window
    chunks = list(store.ledger_csv_chunks(window))
    assert "".join(text for text, _ in chunks) == "".join(
        ledger_line(e) for e in store.stream_ledger(window)
    )
    assert sum(rows for _, rows in chunks) == 4


def test_the_export_reads_one_snapshot(store, monkeypatch):
    """Rows written while an export runs are not in it, however many pages it has."""
    monkeypatch.setattr(sqlite_store, "EXPORT_PAGE_ROWS", 2)
    for n in range(6):
        entry(store, "cus_A", f"{n + 1}.00", days_ago=2 - n / 10)
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    chunks = store.ledger_csv_chunks(window)
    first_text, _ = next(chunks)
    other = open_store(load_settings())
    try:
        entry(other, "cus_A", "77.00", days_ago=1.75)  # between rows of later pages
        entry(other, "cus_A", "99.00", days_ago=0.5)  # after the last row
    finally:
        other.close()
    text = first_text + "".join(text for text, _ in chunks)
    assert [row[4] for row in csv.reader(io.StringIO(text))] == [
        "100",
        "200",
        "300",
        "400",
        "500",
        "600",
    ]
    assert len(list(store.stream_ledger(window))) == 8  # … and they were written


def test_an_export_inside_a_transaction_reads_in_it(store):
    entry(store, "cus_A", "1.00")
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    with store._transaction():
        text = "".join(text for text, _ in store.ledger_csv_chunks(window))
        entry(store, "cus_A", "2.00")
    assert text.split(",")[4] == "100"
    assert len(list(store.stream_ledger(window))) == 2


def test_since_and_until_pick_a_half_open_window(store):
    entry(store, "cus_A", "1.00", days_ago=3)
    entry(store, "cus_A", "2.00", days_ago=2)
    entry(store, "cus_A", "3.00", days_ago=1)
    result = run("export-csv", "--since", "2026-11-21T12:00:00Z", "--until", "2026-11-23T12:00:00Z")
    lines = result.stdout.splitlines()
    assert [line.split(",")[4] for line in lines[1:]] == ["100", "200"]
    only_days = run("export-csv", "--days", "2")
    assert [line.split(",")[4] for line in only_days.stdout.splitlines()[1:]] == ["200", "300"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "3", "--since", "2026-11-01", "-o", "x.csv"], "either --days or --since"),
        (["--since", "2026-11-20", "--until", "2026-11-10", "-o", "x.csv"], "must be before"),
        (["--dataset", "payroll", "-o", "x.csv"], "is not one of"),
        (["--since", "yesterday", "-o", "x.csv"], "is not an ISO 8601"),
        ([], "--json needs -o FILE"),
    ],
)
def test_bad_requests_exit_2(store_env, args, message):
    result = run("export-csv", *args, "--json")
    assert result.exit_code == 2
    assert message in error(result)["message"]


def test_output_file_is_written_whole_and_reported(store, tmp_path):
    entry(store, "cus_A", "1.00")
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "ledger.csv"
    summary = data(run("export-csv", "-o", str(target), "--json"))
    assert summary == {
        "dataset": "ledger",
        "path": str(target),
        "rows": 1,
        "window": {"from": "2026-11-17T12:00:00Z", "to": "2026-11-24T12:00:00Z"},
    }
    assert target.read_text(encoding="utf-8").startswith(LEDGER_HEADER)
    assert [p.name for p in target.parent.iterdir()] == ["ledger.csv"]
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_failed_export_leaves_the_previous_file_untouched(store, tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "ledger.csv"
    target.write_text("last week's export\n")

    def broken(*args, **kwargs):
        yield LEDGER_HEADER, 0
        raise RuntimeError("connection lost")

    monkeypatch.setattr(export_service, "export_chunks", broken)
    result = run("export-csv", "-o", str(target))
    assert result.exit_code == 1
    assert target.read_text() == "last week's export\n"
    assert [p.name for p in target.parent.iterdir()] == ["ledger.csv"]


def test_alerts_dunning_and_reconciliation_datasets(store):
    alert = store.raise_alert(
        AlertDraft(
            type="invoice_failed",
            dedupe_key="invoice_failed:in_1",
            customer_id="cus_A",
            invoice_id="in_1",
            amount_due=-250,
            currency="usd",
            last_failure="=card declined",
        ),
        actor="tester@ci",
        now=NOW - timedelta(days=1),
    ).alert
    store.schedule_steps(
        [
            StepDraft(
                invoice_id="in_1",
                customer_id="cus_A",
                alert_id=alert.id,
                day=0,
                channel="email",
                template="day0_email",
                due_at=NOW - timedelta(hours=1),
            )
        ],
        NOW,
    )
    store.upsert_invoice(parse_invoice(invoice("in_1", "cus_A", total=1000)), NOW, NOW)
    entry(store, "cus_A", "9.00")

    alerts = run("export-csv", "--dataset", "alerts").stdout.splitlines()
    assert alerts[0] == ",".join(HEADERS["alerts"])
    assert alerts[1] == (
        f"{alert.id},invoice_failed,open,cus_A,in_1,-250,-2.50,usd,,0,'=card declined,"
        "2026-11-23T12:00:00.000000Z,2026-11-23T12:00:00.000000Z,,,"
    )
    dunning = run("export-csv", "--dataset", "dunning").stdout.splitlines()
    assert dunning[0] == ",".join(HEADERS["dunning"])
    assert dunning[1].startswith(f"1,in_1,cus_A,{alert.id},0,email,day0_email,scheduled,")
    reconciliation = run("export-csv", "--dataset", "reconciliation", "--days", "30").stdout
    assert reconciliation.splitlines() == [
        ",".join(HEADERS["reconciliation"]),
        "2026-10-25T12:00:00.000000Z,2026-11-24T12:00:00.000000Z,cus_A,usd,1000,10.00,900,9.00,100,1.00,"
        "10.0000,mismatch",
    ]


def test_the_reconciliation_export_gives_reconciles_verdict_by_default(store):
    # An invoice 10 days old, half its fees recorded 3 days ago: over 30 days the two sides
    # match; over the 7 days other exports default to, the ledger has fees with no invoice.
    store.upsert_invoice(
        parse_invoice(
            invoice("in_1QpL8HLkdIwHu7ixl4OzzPMv", "cus_QpL8HLkdIwHu7i", total=1000,
                    created=NOW - timedelta(days=10))
        ),
        NOW,
        NOW,
    )  # fmt: skip
    entry(store, "cus_QpL8HLkdIwHu7i", "5.00", days_ago=10)
    entry(store, "cus_QpL8HLkdIwHu7i", "5.00", days_ago=3)

    verdict = data(run("reconcile", "--offline", "--json"))
    exported = list(
        csv.DictReader(io.StringIO(run("export-csv", "--dataset", "reconciliation").stdout))
    )

    assert [row["status"] for row in verdict["rows"]] == ["match"]
    assert [row["status"] for row in exported] == ["match"]
    assert exported[0]["window_from"] == verdict["window"]["from"].replace("Z", ".000000Z")
    assert exported[0]["window_to"] == verdict["window"]["to"].replace("Z", ".000000Z")


def test_the_row_count_is_what_each_dataset_streams(store):
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    for days_ago in (1, 2, 8):
        entry(store, "cus_QpL8HLkdIwHu7i", "4.50", days_ago=days_ago)
    store.raise_alert(
        AlertDraft(
            type="invoice_failed",
            dedupe_key="invoice_failed:in_1QpL8HLkdIwHu7ixl4OzzPMv",
            customer_id="cus_QpL8HLkdIwHu7i",
            invoice_id="in_1QpL8HLkdIwHu7ixl4OzzPMv",
            amount_due=14_900,
            currency="usd",
        ),
        actor="tester@ci",
        now=NOW - timedelta(days=1),
    )

    assert store.export_row_count("ledger", window) == 2 == len(list(store.stream_ledger(window)))
    assert store.export_row_count("alerts", window) == 1 == len(list(store.stream_alerts(window)))
    assert store.export_row_count("dunning", window) == 0
    assert store.export_row_count("reconciliation", window) is None
