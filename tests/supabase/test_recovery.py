"""The Supabase store's recovery read (RecoveryOps.failed_invoices) through the real
``supabase`` client and the PostgREST stand-in on a real PostgreSQL: the hand-computed
month of ``tests.finance.recovery_history`` read as the PostgreSQL store reads it, the
report's figures from it, Stripe's ``paid_at`` where no event settled the invoice, a
window longer than the row cap read page by page with each page's touches, any rows
(hypothesis: statuses, settlements, Stripe's paid_at in every shape, steps, audit lines,
alerts, exemptions) read as the PostgreSQL store reads them, and the section's function
declarations.

The history is written by the project's owner (``owner``, the PostgreSQL store on the
same database), as the other areas' writes are not all through REST yet and the history
writes the decline codes into the rows directly; what is under test is the read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.adapters.store.supabase.client import PAGE_SIZE
from cloudgreet_billing.domain.mirror import parse_invoice
from cloudgreet_billing.domain.recovery import FailedInvoice, recovery_report
from cloudgreet_billing.services.recovery import build_recovery_report, recovery_window
from cloudgreet_billing.services.sync import apply_events
from tests.finance.factories import NOW, unix
from tests.finance.recovery_history import CUSTOMERS, INVOICES, History, _invoice, apply_history
from tests.sync.conftest import event, full_invoice

FAILED = "^/rpc/billing_api_failed_invoices"
WINDOW = recovery_window(NOW)


@pytest.fixture
def owner(postgrest: Any, supabase_store: Any) -> Iterator[PostgresStore]:
    """The project's database as its owner sees it (the SQL editor)."""
    store = PostgresStore(postgrest.database_url)
    yield store
    store.close()


def comparable(invoices: Iterator[FailedInvoice]) -> list[FailedInvoice]:
    """The invoices with their touches in time order (the SQL store gives them in no
    particular order; the figures do not depend on it)."""
    from dataclasses import replace

    return [
        replace(
            i,
            touches=tuple(
                sorted(i.touches, key=lambda t: (t.at, t.kind, t.day or 0, t.channel or ""))
            ),
        )
        for i in invoices
    ]


def test_the_history_reads_through_rest_as_through_postgresql(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    apply_history(owner)
    read = list(supabase_store.failed_invoices(WINDOW))
    assert comparable(iter(read)) == comparable(owner.failed_invoices(WINDOW))
    by_id = {invoice.id: invoice for invoice in read}
    assert sorted(by_id) == sorted(INVOICES[letter] for letter in "ABCDEFGIJKL")
    a, c, f, g, lx = (by_id[INVOICES[letter]] for letter in "ACFGL")
    assert (a.status, a.paid_at, a.settled_at) == ("paid", NOW - timedelta(days=8), a.paid_at)
    assert [t.label for t in a.touches] == ["day 0 email", "day 1 sms"]
    assert (c.exhausted_at, c.decline_code) == (NOW - timedelta(days=16), "stolen_card")
    assert f.last_touch() == "manual retry"
    assert [t.label for t in lx.touches] == ["pay link resent"]
    assert g.exempt_since == NOW - timedelta(days=40)
    assert all(i.first_failed_at.utcoffset() == timedelta(0) for i in read)
    # The whole month is one page: one call, and the empty page that ends the reading.
    assert len(postgrest.requests_to(FAILED, "POST")) == 2


class WritesThroughRest:
    """The history's store: every operation through REST; only the history's own
    ``_transaction``/``_execute`` (the decline codes written into the rows) go to the
    owner's connection."""

    def __init__(self, rest: Any, owner: PostgresStore) -> None:
        self.rest, self.owner = rest, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.owner if name in {"_transaction", "_execute"} else self.rest, name)


def test_the_history_written_through_rest_reads_as_on_postgresql(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    # Failures and payments (sync), steps sent (mark-sent), a retry's settlement, a resent
    # link, an escalation and the exemptions, all through REST.
    apply_history(WritesThroughRest(supabase_store, owner))
    assert postgrest.requests_to("^/rpc/billing_api_exempt_customer", "POST")
    assert comparable(supabase_store.failed_invoices(WINDOW)) == comparable(
        owner.failed_invoices(WINDOW)
    )
    report = build_recovery_report(supabase_store, WINDOW)
    assert report == build_recovery_report(owner, WINDOW)
    assert str(report.total("usd").recovery_rate_pct) == "29.6600"
    assert report.total("usd", "exempt").recovered_amount == 9900


def test_dunning_reports_figures_through_rest_are_the_hand_computed_ones(
    supabase_store: Any, owner: PostgresStore
) -> None:
    apply_history(owner)
    report = build_recovery_report(supabase_store, WINDOW)
    assert report == build_recovery_report(owner, WINDOW)
    usd = report.total("usd")
    assert (usd.failed_invoices, usd.failed_amount) == (6, 85300)
    assert (usd.recovered_invoices, usd.recovered_amount) == (3, 25300)
    assert str(usd.recovery_rate_pct) == "29.6600"
    assert (usd.open_amount, usd.exhausted_amount, usd.unrecoverable_amount) == (
        25000,
        20000,
        10000,
    )
    assert report.total("eur", "exempt").open_amount == 6000
    assert report.currencies == ["eur", "jpy", "usd"]


def test_a_paid_invoice_no_event_settled_takes_stripes_paid_at(
    supabase_store: Any, owner: PostgresStore
) -> None:
    # A backfill (a listing, no event) mirrors B paid: its payment time is Stripe's
    # status_transitions.paid_at. C's object says paid_at as a string, which is not
    # Stripe's: no payment time, as the SQL store reads it.
    history = History(owner)
    failed_at = NOW - timedelta(days=3)
    for letter in "BC":
        history.fail(letter, "usd", 12900, failed_at, decline="insufficient_funds")
        listed = _invoice(
            letter,
            currency="usd",
            amount=12900,
            status="paid",
            failed_at=failed_at,
            paid_at=NOW - timedelta(hours=1),
        )
        if letter == "C":
            listed["status_transitions"]["paid_at"] = str(unix(NOW))
        owner.upsert_invoice(parse_invoice(listed), NOW, NOW)
    b, c = supabase_store.failed_invoices(WINDOW)
    assert (b.id, b.settled_at, b.paid_at) == (INVOICES["B"], None, NOW - timedelta(hours=1))
    assert b.paid_at.tzinfo == UTC
    assert (c.id, c.status, c.paid_at) == (INVOICES["C"], "paid", None)
    assert [b, c] == list(owner.failed_invoices(WINDOW))


def failing(serial: int, invoice_id: str) -> dict[str, Any]:
    failed_at = NOW - timedelta(days=2)
    body = full_invoice(
        invoice_id, customer=f"cus_QpL8HLkd{serial:06d}", created=unix(failed_at) - 3600
    )
    return event(
        f"evt_1QpL8HLkdIwHu7ix{serial:06d}", "invoice.payment_failed", body, unix(failed_at)
    )


def test_a_window_longer_than_the_row_cap_is_read_page_by_page_with_each_pages_touches(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    # 1,003 failed invoices under a row cap of 50: three pages of 500 and the empty one.
    postgrest.max_rows = 50
    count = 2 * PAGE_SIZE + 3
    ids = [f"in_1QpL8HLkdIwHu7ix{serial:06d}" for serial in range(count)]
    report = apply_events(owner, [failing(n, i) for n, i in enumerate(ids)], source="file", now=NOW)
    assert report.events_failed == 0
    # A touch on the last invoice of each page and on the first of the next: each must
    # come back on its own invoice.
    touched = [ids[PAGE_SIZE - 1], ids[PAGE_SIZE], ids[2 * PAGE_SIZE], ids[-1]]
    for n, invoice_id in enumerate(touched):
        owner.append_audit(
            AuditDraft(actor="tester@ci", action="resend-link", target=invoice_id, outcome="sent"),
            NOW - timedelta(hours=n + 1),
        )
    # A resend that did not go out and a retry that did not pay are no touches.
    owner.append_audit(
        AuditDraft(actor="tester@ci", action="resend-link", target=ids[1], outcome="failed"),
        NOW - timedelta(hours=1),
    )
    owner.append_audit(
        AuditDraft(actor="tester@ci", action="retry", target=ids[2], outcome="declined"),
        NOW - timedelta(hours=1),
    )
    stream = supabase_store.failed_invoices(WINDOW)
    first = next(stream)
    # Streamed: the first invoice comes after one call, not after the whole window.
    assert (first.id, len(postgrest.requests_to(FAILED, "POST"))) == (ids[0], 1)
    read = [first, *stream]
    assert [invoice.id for invoice in read] == ids
    assert {i.id: [t.at for t in i.touches] for i in read if i.touches} == {
        invoice_id: [NOW - timedelta(hours=n + 1)] for n, invoice_id in enumerate(touched)
    }
    assert all(len(i.touches) == 1 and i.touches[0].kind == "pay_link" for i in read if i.touches)
    assert len(postgrest.requests_to(FAILED, "POST")) == 4
    assert recovery_report(read, WINDOW) == build_recovery_report(owner, WINDOW)
    # Steps scheduled but not sent are no touches either.
    assert owner.count_steps(statuses=("scheduled",)) == 3 * count


def test_an_invoice_failed_at_the_windows_end_is_the_next_windows(
    supabase_store: Any, owner: PostgresStore
) -> None:
    # [start, end): the start is in, the end is out.
    history = History(owner)
    history.fail("A", "usd", 4900, WINDOW.start, decline="insufficient_funds")
    history.fail("B", "usd", 4900, WINDOW.end, decline="insufficient_funds")
    assert [i.id for i in supabase_store.failed_invoices(WINDOW)] == [INVOICES["A"]]
    assert CUSTOMERS["A"] == next(supabase_store.failed_invoices(WINDOW)).customer_id


def test_times_come_back_in_utc_whatever_the_projects_time_zone(
    supabase_store: Any, owner: PostgresStore, postgrest: Any
) -> None:
    apply_history(owner)
    postgrest.sql("ALTER ROLE service_role SET timezone = 'America/New_York'")
    try:
        read = list(supabase_store.failed_invoices(WINDOW))
    finally:
        postgrest.sql("ALTER ROLE service_role RESET timezone")
    assert comparable(iter(read)) == comparable(owner.failed_invoices(WINDOW))
    moments = [i.first_failed_at for i in read] + [t.at for i in read for t in i.touches]
    assert {moment.utcoffset() for moment in moments} == {timedelta(0)}


#: The section's functions that only read: STABLE, so PostgREST runs them READ ONLY.
READS = {
    "billing_api_failed_invoices",
    "billing_api_exemption_time",
    "billing_api_get_exemption",
    "billing_api_list_exemptions",
    "billing_api_count_exemptions",
}
WRITES = {"billing_api_exempt_customer", "billing_api_unexempt_customer"}


def section_functions() -> set[str]:
    text = (Path(__file__).parents[2] / "migrations" / "0007_supabase_api.sql").read_text()
    start = text.index("-- ==== section: exemptions, recovery")
    section = text[start : text.index("-- ==== end section: exemptions, recovery", start)]
    return set(re.findall(r"CREATE OR REPLACE FUNCTION (billing_api_\w+)", section))


def test_the_sections_functions_run_as_the_caller_for_service_role_only(
    supabase_store: Any, postgrest: Any
) -> None:
    assert section_functions() == READS | WRITES
    rows = postgrest.sql(
        "SELECT p.proname, p.prosecdef, p.provolatile, p.proconfig, "
        "has_function_privilege('anon', p.oid, 'EXECUTE'), "
        "has_function_privilege('authenticated', p.oid, 'EXECUTE'), "
        "has_function_privilege('service_role', p.oid, 'EXECUTE') "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND p.proname = ANY(%s)",
        (sorted(READS | WRITES),),
    )
    assert sorted(row[0] for row in rows) == sorted(READS | WRITES), "no overloads"
    for name, definer, volatility, config, anon, authenticated, service in rows:
        assert not definer, f"{name} must be SECURITY INVOKER"
        assert config == ["search_path=public, pg_temp"], name
        assert volatility == ("s" if name in READS else "v"), name
        assert (anon, authenticated, service) == (False, False, True), name


# --- the commands, with only the Supabase variables -------------------------------------


@pytest.fixture
def rest_env(postgrest: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Only the project URL and the secret key, as an engineer's .env sets them."""
    monkeypatch.setenv("SUPABASE_URL", postgrest.url)
    monkeypatch.setenv("SUPABASE_SECRET_KEY", postgrest.keys.secret)
    return postgrest


def test_dunning_report_and_the_export_through_rest_hold_the_hand_computed_rows(
    supabase_store: Any, owner: PostgresStore, rest_env: Any
) -> None:
    from freezegun import freeze_time

    from tests.cli.helpers import data, run
    from tests.finance.test_recovery import EXPECTED, FIELDS

    apply_history(owner)
    with freeze_time(NOW):
        result = run("dunning", "report", "--json")
        export = run("export-csv", "--dataset", "recovery")
    report = data(result)
    assert [tuple(row[name] for name in FIELDS) for row in report["rows"]] == EXPECTED
    assert export.exit_code == 0, export.stderr
    assert len(export.stdout.splitlines()) == 1 + len(EXPECTED)
    assert rest_env.requests_to(FAILED, "POST")


# --- any rows: the function reads them as sql_recovery.py does --------------------------

HOUR = timedelta(hours=1)
CUSTOMER_POOL = ("cus_QpL8HLkdIwHu7i", "cus_Rq2mXk9fLw3ZtA", "cus_Sx7bNn4gYh1CvE")
#: What Stripe's object may say of the payment time: a time, nothing, or not a time.
PAID_AT = st.sampled_from(
    [
        {"status_transitions": {"paid_at": unix(NOW - 3 * HOUR)}},
        {"status_transitions": {"paid_at": None}},
        {"status_transitions": {"paid_at": float(unix(NOW))}},
        {"status_transitions": {"paid_at": str(unix(NOW))}},
        {"status_transitions": {"paid_at": True}},
        {"status_transitions": []},
        {},
        ["not", "an", "object"],
    ]
)
RESOLUTIONS = st.sampled_from(
    [
        None,
        "invoice paid (evt_1QpL8HLkdIwHu7ixl4OzzPMv)",
        "invoice voided (evt_1QpL8HLkdIwHu7ixl4OzzPMv)",
        "invoice marked uncollectible (evt_1QpL8HLkdIwHu7ixl4OzzPMv)",
        "paid by a manual retry (tester@ci)",
    ]
)
AUDITED = st.sampled_from(
    [
        ("retry", "paid"),
        ("retry", "declined"),
        ("resend-link", "sent"),
        ("resend-link", "failed"),
        ("dunning.exempt", "exempted"),
    ]
)
HOURS = st.integers(min_value=-24 * 45, max_value=24 * 3)

invoice_rows = st.fixed_dictionaries(
    {
        "customer": st.sampled_from(CUSTOMER_POOL),
        "status": st.sampled_from(["open", "paid", "void", "uncollectible"]),
        "failed": st.one_of(st.none(), HOURS),
        "settled": st.one_of(st.none(), HOURS),
        "resolution": RESOLUTIONS,
        "raw": PAID_AT,
        "decline": st.sampled_from([None, "insufficient_funds", "stolen_card"]),
        "steps": st.lists(
            st.tuples(
                st.sampled_from([(0, "email"), (1, "sms"), (3, "email")]),
                st.sampled_from(["sent", "scheduled", "skipped"]),
                st.one_of(st.none(), HOURS),
            ),
            max_size=3,
            unique_by=lambda step: step[0],
        ),
        "audit": st.lists(st.tuples(AUDITED, HOURS), max_size=3),
        "exhausted": st.lists(HOURS, max_size=2),
    }
)


def insert(conn: Any, n: int, row: dict[str, Any]) -> None:
    at = {key: None if row[key] is None else NOW + row[key] * HOUR for key in ("failed", "settled")}
    invoice = f"in_1QpL8HLkdIwHu7ixl4Ozz{n:03d}"
    conn.execute(
        "INSERT INTO billing_invoices (id, customer_id, status, currency, amount_due, "
        "amount_paid, raw, stripe_created, stripe_updated_at, first_failed_at, settled_at, "
        "settled_resolution, last_decline_code) "
        "VALUES (%s, %s, %s, 'usd', 12900, 0, %s, %s, %s, %s, %s, %s, %s)",
        (
            invoice,
            row["customer"],
            row["status"],
            Jsonb(row["raw"]),
            NOW - timedelta(days=50),
            NOW,
            at["failed"],
            at["settled"],
            row["resolution"],
            row["decline"],
        ),
    )
    for (day, channel), status, sent in row["steps"]:
        conn.execute(
            "INSERT INTO billing_dunning_events (invoice_id, customer_id, day, channel, "
            "template, due_at, status, sent_at) VALUES (%s, %s, %s, %s, 'reminder', %s, %s, %s)",
            (
                invoice,
                row["customer"],
                day,
                channel,
                NOW,
                status,
                None if sent is None else NOW + sent * HOUR,  # 0 hours is NOW, not null
            ),
        )
    for (action, outcome), hours in row["audit"]:
        conn.execute(
            "INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome) "
            "VALUES (%s, 'tester@ci', %s, %s, %s)",
            (NOW + hours * HOUR, action, invoice, outcome),
        )
    for k, hours in enumerate(row["exhausted"]):
        # Resolved ones too: the figures take the first ever opened.
        conn.execute(
            "INSERT INTO billing_alerts (type, status, dedupe_key, invoice_id, created_at, "
            "resolved_at) VALUES ('dunning_exhausted', %s, %s, %s, %s, %s)",
            (
                "resolved" if k else "open",
                f"dunning_exhausted:{invoice}",
                invoice,
                NOW + hours * HOUR,
                NOW if k else None,
            ),
        )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(invoice_rows, max_size=8),
    exempt=st.dictionaries(st.sampled_from(CUSTOMER_POOL), HOURS),
    days=st.integers(min_value=1, max_value=40),
)
def test_any_rows_read_through_rest_as_through_postgresql(
    supabase_store: Any,
    owner: PostgresStore,
    postgrest: Any,
    rows: list[dict[str, Any]],
    exempt: dict[str, int],
    days: int,
) -> None:
    with psycopg.connect(postgrest.database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE billing_invoices, billing_dunning_events, billing_audit_log, "
            "billing_alerts, billing_dunning_exemptions CASCADE"
        )
        for n, row in enumerate(rows):
            insert(conn, n, row)
        for customer, hours in exempt.items():
            conn.execute(
                "INSERT INTO billing_dunning_exemptions VALUES (%s, 'plan', 'alice', %s)",
                (customer, NOW + hours * HOUR),
            )
    window = recovery_window(NOW, days)
    assert comparable(supabase_store.failed_invoices(window)) == comparable(
        owner.failed_invoices(window)
    )
