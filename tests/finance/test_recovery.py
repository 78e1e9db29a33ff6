"""Recovery figures on SQLite and PostgreSQL: the store's reads, ``dunning report``, the
dashboard's line and ``export-csv --dataset recovery``, against the hand-computed history
in ``tests.finance.recovery_history``."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from cloudgreet_billing.services.recovery import recovery_window
from tests.cli.helpers import data, error, run
from tests.finance.factories import NOW, unix
from tests.finance.recovery_history import CUSTOMERS, INVOICES, History, apply_history

pytestmark = pytest.mark.usefixtures("frozen")

DAY = 86_400
HOUR = 3_600
AN_HOUR = timedelta(hours=1)
AN_DAY = timedelta(days=1)


def total(currency, scope, failed, recovered, rate, rest, times):
    """An ``all`` row: (invoices, amount) failed and recovered, the rate, (partially paid,
    open, exhausted, unrecoverable), (median, p90) in seconds."""
    key = (currency, scope, "all", None, None, None)
    return (*key, *failed, *recovered, rate, None, *rest, *times)


def touch(currency, label, recovered, share, times):
    """A ``touch`` row: only the recovered figures and their share apply."""
    key = (currency, "dunned", "touch", label, None, None)
    return (*key, None, None, *recovered, None, share, None, None, None, None, *times)


def decline(currency, kind, code, failed, recovered, rate, rest, times):
    """A ``decline`` row, with the figures of an ``all`` row."""
    key = (currency, "dunned", "decline", None, kind, code)
    return (*key, *failed, *recovered, rate, None, *rest, *times)


NO_TIME = (None, None)
#: The sums in the history's docstring, row by row.
EXPECTED = [
    total("eur", "dunned", (2, 12000), (1, 8000), 66.6667, (0, 4000, 0, 0), (4 * DAY, 4 * DAY)),
    total("eur", "exempt", (1, 6000), (0, 0), 0.0, (0, 6000, 0, 0), NO_TIME),
    touch("eur", "day 3 email", (1, 8000), 100.0, (4 * DAY, 4 * DAY)),
    decline(
        "eur", "soft", "do_not_honor", (1, 8000), (1, 8000), 100.0, (0, 0, 0, 0), (4 * DAY, 4 * DAY)
    ),
    decline("eur", "unknown", "none", (1, 4000), (0, 0), 0.0, (0, 4000, 0, 0), NO_TIME),
    total("jpy", "dunned", (1, 5000), (1, 5000), 100.0, (0, 0, 0, 0), (1800, 1800)),
    touch("jpy", "pay link resent", (1, 5000), 100.0, (1800, 1800)),
    decline(
        "jpy", "soft", "insufficient_funds", (1, 5000), (1, 5000), 100.0, (0, 0, 0, 0), (1800, 1800)
    ),
    total(
        "usd", "dunned", (6, 85300), (3, 25300), 29.66, (5000, 25000, 20000, 10000), (DAY, 2 * DAY)
    ),
    total("usd", "exempt", (1, 9900), (1, 9900), 100.0, (0, 0, 0, 0), (5 * DAY, 5 * DAY)),
    touch("usd", "before any message", (1, 4900), 19.3676, (2 * HOUR, 2 * HOUR)),
    touch("usd", "day 1 sms", (1, 12900), 50.9881, (2 * DAY, 2 * DAY)),
    touch("usd", "manual retry", (1, 7500), 29.6443, (DAY, DAY)),
    decline("usd", "hard", "expired_card", (1, 10000), (0, 0), 0.0, (0, 0, 0, 10000), NO_TIME),
    decline("usd", "hard", "stolen_card", (1, 20000), (0, 0), 0.0, (0, 0, 20000, 0), NO_TIME),
    decline(
        "usd",
        "soft",
        "insufficient_funds",
        (3, 47800),
        (2, 17800),
        37.2385,
        (5000, 25000, 0, 0),
        (2 * HOUR, 2 * DAY),
    ),
    decline(
        "usd", "soft", "processing_error", (1, 7500), (1, 7500), 100.0, (0, 0, 0, 0), (DAY, DAY)
    ),
]

FIELDS = (
    "currency",
    "scope",
    "breakdown",
    "touch",
    "decline_class",
    "decline_code",
    "failed_invoices",
    "failed_amount",
    "recovered_invoices",
    "recovered_amount",
    "recovery_rate_pct",
    "share_of_recovered_pct",
    "partially_paid_amount",
    "open_amount",
    "exhausted_amount",
    "unrecoverable_amount",
    "median_time_to_recover_seconds",
    "p90_time_to_recover_seconds",
)


def test_the_store_reads_each_failed_invoice_as_the_history_left_it(store):
    apply_history(store)
    read = {invoice.id: invoice for invoice in store.failed_invoices(recovery_window(NOW))}
    assert INVOICES["H"] not in read  # first failed 40 days ago
    assert sorted(read) == sorted(INVOICES[letter] for letter in "ABCDEFGIJKL")
    a, c, d, e, f, g = (read[INVOICES[letter]] for letter in "ACDEFG")
    assert (a.status, a.paid_at, a.settled_at) == ("paid", NOW - timedelta(days=8), a.paid_at)
    assert [touch.label for touch in sorted(a.touches, key=lambda t: t.at)] == [
        "day 0 email",
        "day 1 sms",
    ]
    assert (c.exhausted_at, c.decline_code, c.decline_class) == (
        NOW - timedelta(days=16),
        "stolen_card",
        "hard",
    )
    assert (d.status, d.settled_at, d.paid_at) == ("void", NOW - timedelta(days=12), None)
    assert (e.amount_due, e.amount_paid, e.advice_code) == (30000, 5000, "try_again_later")
    assert f.last_touch() == "manual retry"
    assert g.exempt_since == NOW - timedelta(days=40)


def test_a_payment_seen_only_on_the_invoice_takes_stripes_paid_at(store):
    # A backfill (a listing, no event) mirrors the paid invoice: no settling event, so the
    # payment time is the invoice's status_transitions.paid_at.
    from cloudgreet_billing.domain.mirror import parse_invoice
    from tests.finance.recovery_history import _invoice

    history = History(store)
    failed_at = NOW - timedelta(days=3)
    history.fail("A", "usd", 12900, failed_at, decline="insufficient_funds")
    listed = _invoice(
        "A", currency="usd", amount=12900, status="paid", failed_at=failed_at, paid_at=NOW - AN_HOUR
    )
    store.upsert_invoice(parse_invoice(listed), NOW, NOW)
    (invoice,) = store.failed_invoices(recovery_window(NOW))
    assert (invoice.settled_at, invoice.paid_at) == (None, NOW - AN_HOUR)


def test_dunning_report_json_matches_the_hand_computed_history(store):
    apply_history(store)
    report = data(run("dunning", "report", "--json"))
    assert report["window"] == {"from": "2026-10-25T12:00:00Z", "to": "2026-11-24T12:00:00Z"}
    assert report["currencies"] == ["eur", "jpy", "usd"]
    assert [tuple(row[name] for name in FIELDS) for row in report["rows"]] == EXPECTED
    usd = report["rows"][8]
    # Every failed cent is accounted for exactly once.
    assert usd["failed_amount"] == sum(
        usd[name]
        for name in (
            "recovered_amount",
            "partially_paid_amount",
            "open_amount",
            "exhausted_amount",
            "unrecoverable_amount",
        )
    )
    assert (usd["open_invoices"], usd["exhausted_invoices"], usd["unrecoverable_invoices"]) == (
        1,
        1,
        1,
    )


def test_dunning_report_for_a_pipe_prints_whole_rows(store):
    apply_history(store)
    result = run("dunning", "report")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "Recovery of payments first failed 2026-10-25 12:00 UTC → 2026-11-24 12:00 UTC "
        "(30 days); rates by amount, exempt customers apart"
    )
    assert lines[1].split("\t") == [
        "currency",
        "scope",
        "failed",
        "invoices",
        "recovered",
        "paid",
        "rate",
        "partially paid",
        "open",
        "exhausted",
        "unrecoverable",
        "median",
        "p90",
    ]
    assert (
        "usd\tdunned\t$853.00\t6\t$253.00\t3\t29.66%\t$50.00\t$250.00\t$200.00\t$100.00\t1d\t2d"
        in lines
    )
    assert "jpy\tdunned\t¥5,000\t1\t¥5,000\t1\t100.00%\t¥0\t¥0\t¥0\t¥0\t30m\t30m" in lines
    assert "usd\tbefore any message\t$49.00\t1\t19.37%\t2h" in lines
    assert "usd\tsoft\tinsufficient_funds\t$478.00\t3\t$178.00\t2\t37.24%" in lines


def test_a_shorter_window_counts_only_the_failures_inside_it(store):
    apply_history(store)
    report = data(run("dunning", "report", "--days", "6", "--json"))
    totals = {
        (row["currency"], row["scope"]): (
            row["failed_amount"],
            row["recovered_amount"],
            row["recovery_rate_pct"],
        )
        for row in report["rows"]
        if row["breakdown"] == "all"
    }
    # usd: B and E (F failed 7 days ago); eur: K, and J exempt (failed exactly 6 days ago,
    # the window's inclusive start); jpy: L.
    assert totals == {
        ("usd", "dunned"): (34900, 4900, 14.0401),
        ("eur", "dunned"): (4000, 0, 0.0),
        ("eur", "exempt"): (6000, 0, 0.0),
        ("jpy", "dunned"): (5000, 5000, 100.0),
    }


def test_no_failed_payment_says_so_and_prints_no_rows(store):
    result = run("dunning", "report")
    assert (result.exit_code, result.stdout) == (0, "")
    assert "no payment failed in the last 30 days" in result.stderr
    assert data(run("dunning", "report", "--json"))["rows"] == []


def test_days_must_be_a_whole_number_from_one(store):
    result = run("dunning", "report", "--days", "0", "--json")
    assert result.exit_code == 2
    assert "--days" in error(result)["message"]


def test_the_dashboard_shows_the_recovery_line_and_field(store):
    apply_history(store)
    board = data(run("dashboard", "--json"))
    assert board["recovery_30d"] == {
        "eur": {
            "failed_invoices": 2,
            "failed_amount": 12000,
            "recovered_invoices": 1,
            "recovered_amount": 8000,
            "recovery_rate_pct": 66.6667,
        },
        "jpy": {
            "failed_invoices": 1,
            "failed_amount": 5000,
            "recovered_invoices": 1,
            "recovered_amount": 5000,
            "recovery_rate_pct": 100.0,
        },
        "usd": {
            "failed_invoices": 6,
            "failed_amount": 85300,
            "recovered_invoices": 3,
            "recovered_amount": 25300,
            "recovery_rate_pct": 29.66,
        },
    }
    lines = run("dashboard").stdout.splitlines()
    assert (
        "recovery (30 days)\teur 66.67% of €120.00 recovered, jpy 100.00% of ¥5,000 "
        "recovered, usd 29.66% of $853.00 recovered"
    ) in lines


def test_the_recovery_export_holds_the_reports_rows(store):
    apply_history(store)
    result = run("export-csv", "--dataset", "recovery")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    report = data(run("dunning", "report", "--json"))["rows"]
    assert len(rows) == len(report) == len(EXPECTED)
    for line, row in zip(rows, report, strict=True):
        assert (line["window_from"], line["window_to"]) == (
            "2026-10-25T12:00:00.000000Z",
            "2026-11-24T12:00:00.000000Z",
        )
        for name in ("currency", "scope", "breakdown", "touch", "decline_class", "decline_code"):
            assert line[name] == (row[name] or "")
        for name in ("failed", "recovered", "open", "exhausted", "unrecoverable"):
            expected = row[f"{name}_amount"]
            assert line[f"{name}_minor"] == ("" if expected is None else str(expected))
        for name in ("recovery_rate_pct", "share_of_recovered_pct"):
            expected = row[name]
            assert line[name] == ("" if expected is None else f"{expected:.4f}")
    usd = rows[8]
    assert (usd["failed_major"], usd["recovered_major"], usd["recovery_rate_pct"]) == (
        "853.00",
        "253.00",
        "29.6600",
    )
    assert rows[5]["failed_major"] == "5000"  # yen have no minor unit


def test_a_decline_code_is_never_a_formula_in_the_export(store):
    history = History(store)
    history.fail("K", "eur", 4000, NOW - timedelta(days=2), decline='=HYPERLINK("x")')
    result = run("export-csv", "--dataset", "recovery")
    assert result.exit_code == 0, result.stderr
    decline = next(
        row for row in csv.DictReader(io.StringIO(result.stdout)) if row["breakdown"] == "decline"
    )
    assert decline["decline_code"] == '\'=HYPERLINK("x")'
    assert decline["currency"] == "eur"
    assert CUSTOMERS["K"] not in result.stdout  # figures, not customers


def test_touches_stay_with_their_invoices_across_pages(store):
    # More failed invoices than one page of touch lookups (IDS_PER_QUERY): each page's
    # touches must come back on that page's invoices, and every invoice exactly once.
    from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
    from cloudgreet_billing.adapters.store.sql_finance import IDS_PER_QUERY
    from cloudgreet_billing.services.sync import apply_events
    from tests.finance.factories import unix
    from tests.sync.conftest import event, full_invoice

    count = IDS_PER_QUERY + 3
    failed_at = NOW - timedelta(days=2)
    ids = [f"in_1QpL8HLkdIwHu7ix{serial:06d}" for serial in range(count)]
    events = [
        event(
            f"evt_1QpL8HLkdIwHu7ix{serial:06d}",
            "invoice.payment_failed",
            full_invoice(invoice_id, created=unix(failed_at) - 3600),
            unix(failed_at),
        )
        for serial, invoice_id in enumerate(ids)
    ]
    assert apply_events(store, events, source="file", now=NOW).events_failed == 0
    last = ids[-1]  # on the second page
    store.append_audit(
        AuditDraft(actor="tester@ci", action="resend-link", target=last, outcome="sent"),
        failed_at + AN_HOUR,
    )
    read = list(store.failed_invoices(recovery_window(NOW)))
    assert [invoice.id for invoice in read] == sorted(ids)
    touched = {invoice.id: invoice.touches for invoice in read if invoice.touches}
    assert list(touched) == [last]
    assert [touch.label for touch in touched[last]] == ["pay link resent"]


def test_a_write_off_collected_later_is_recovered_when_stripe_says_it_was_paid(store):
    # Stripe can still collect an uncollectible invoice. The earliest settlement stays the
    # write-off (the mirror never reopens), so the payment time comes from the invoice.
    from tests.finance.recovery_history import _invoice

    history = History(store)
    failed_at = NOW - timedelta(days=9)
    history.fail("D", "usd", 10000, failed_at, decline="insufficient_funds")
    written_off = _invoice("D", currency="usd", amount=10000, status="open", failed_at=failed_at)
    written_off["status"] = "uncollectible"
    written_off["status_transitions"]["marked_uncollectible_at"] = unix(NOW - 5 * AN_DAY)
    history._event("invoice.marked_uncollectible", written_off, NOW - 5 * AN_DAY)
    before = data(run("dunning", "report", "--json"))["rows"][0]
    assert (before["unrecoverable_amount"], before["recovered_amount"]) == (10000, 0)

    history.pay("D", NOW - 2 * AN_DAY)
    (invoice,) = store.failed_invoices(recovery_window(NOW))
    assert (invoice.status, invoice.settled_at) == ("paid", NOW - 5 * AN_DAY)
    assert invoice.paid_at == NOW - 2 * AN_DAY
    after = data(run("dunning", "report", "--json"))["rows"][0]
    assert (after["unrecoverable_amount"], after["recovered_amount"]) == (0, 10000)
    assert after["median_time_to_recover_seconds"] == 7 * DAY
