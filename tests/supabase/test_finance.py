"""The ledger, finance and audit areas of the Supabase REST store, through the real
``supabase`` client and the PostgREST stand-in on a real PostgreSQL: imports larger than
one request, answers lost after the commit, reads larger than the silent row cap, and the
finance figures equal to the PostgreSQL store's on the same data. The functions are also
called directly on PostgreSQL where two sessions race."""

from __future__ import annotations

import csv
import io
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.adapters.store.protocol_ledger import LedgerQuery
from cloudgreet_billing.adapters.store.supabase import finance
from cloudgreet_billing.adapters.store.supabase.errors import DataRefused
from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore
from cloudgreet_billing.domain.export import ledger_line
from cloudgreet_billing.domain.ledger import LedgerDraft, make_draft
from cloudgreet_billing.domain.ledger_batch import batches_of
from cloudgreet_billing.domain.ledger_identity import EntryFacts, ExternalIdConflicts
from cloudgreet_billing.domain.reconciliation import Window
from cloudgreet_billing.errors import BadInput, ConfigError, StoreError, Unavailable
from tests.finance.test_dashboard import seed
from tests.finance.test_export import TRICKY
from tests.postgrest.server import Fault

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CUSTOMER = "cus_QTestAcme01"
INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
STAGE = "^/rpc/billing_api_ledger_import_stage$"
COMMIT = "^/rpc/billing_api_ledger_import_commit$"
ONE_CALL = "^/rpc/billing_api_import_ledger$"
STATE = "^/rpc/billing_api_ledger_import_state$"
#: Rows per staging request in these tests, so that 230 rows take five.
STAGE_ROWS = 50


def draft(n: int, **overrides: Any) -> LedgerDraft:
    values: dict[str, Any] = {
        "customer_id": CUSTOMER,
        "kind": "booking_fee",
        "amount": f"{n}.25",
        "currency": "usd",
        "occurred_at": NOW - timedelta(days=1, minutes=n),
        "invoice_id": INVOICE,
        "external_id": f"bk_2026_11_{n:05d}",
    }
    values.update(overrides)
    return make_draft(**values)


def ledger_rows(postgrest: Any) -> int:
    return int(postgrest.sql("SELECT count(*) FROM billing_usage_ledger")[0][0])


def staged_rows(postgrest: Any) -> int:
    return int(postgrest.sql("SELECT count(*) FROM billing_ledger_import_rows")[0][0])


@pytest.fixture
def small_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finance, "STAGE_ROWS", STAGE_ROWS)


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry pauses the store asked for, not slept."""
    asked: list[float] = []
    monkeypatch.setattr(finance.SupabaseFinance, "_pause", lambda self, s: asked.append(s))
    return asked


@pytest.fixture
def owner_store(supabase_store: Any, postgrest: Any) -> Iterator[PostgresStore]:
    """The PostgreSQL store on the same database: to seed other areas, and to compare."""
    store = PostgresStore(postgrest.database_url)
    yield store
    store.close()


# --- imports larger than one request ----------------------------------------------------


@pytest.mark.usefixtures("small_stages")
def test_an_import_larger_than_one_request_is_staged_then_committed_by_one_call(
    supabase_store, postgrest
):
    outcome = supabase_store.import_ledger(batches_of((draft(n) for n in range(230)), 20), NOW)
    assert (outcome.inserted, outcome.duplicates) == (230, 0)
    assert len(postgrest.requests_to(STAGE, "POST")) == 5  # 4 x 50 + 30
    assert len(postgrest.requests_to(COMMIT, "POST")) == 1
    assert ledger_rows(postgrest) == 230
    assert staged_rows(postgrest) == 0
    entries = supabase_store.list_ledger(LedgerQuery(limit=1_000))
    # Each row is a minute earlier than the one before it: newest first is the file's order.
    assert [e.external_id for e in entries] == [f"bk_2026_11_{n:05d}" for n in range(230)]
    assert {e.created_at for e in entries} == {NOW}


def test_an_import_that_fits_in_one_request_is_one_call(supabase_store, postgrest):
    outcome = supabase_store.import_ledger(batches_of(draft(n) for n in range(300)), NOW)
    assert (outcome.inserted, outcome.duplicates) == (300, 0)
    assert [r.path for r in postgrest.requests if "ledger" in r.path] == [
        "/rpc/billing_api_import_ledger"
    ]


@pytest.mark.usefixtures("small_stages")
def test_an_import_whose_last_batch_fails_to_read_leaves_nothing(supabase_store, postgrest):
    def rows() -> Iterator[LedgerDraft]:
        yield from (draft(n) for n in range(220))
        raise BadInput("line 222: amount 1,5 is not a number")

    with pytest.raises(BadInput, match="line 222"):
        supabase_store.import_ledger(batches_of(rows(), 20), NOW)
    assert len(postgrest.requests_to(STAGE, "POST")) == 4  # 200 rows were already staged
    assert ledger_rows(postgrest) == 0
    # The staging is dropped at once, not left for the hourly clean-up.
    assert staged_rows(postgrest) == 0
    assert postgrest.sql("SELECT count(*) FROM billing_ledger_imports")[0][0] == 0


@pytest.mark.usefixtures("small_stages")
def test_an_import_whose_last_stage_request_keeps_failing_leaves_nothing(
    supabase_store, postgrest, pauses
):
    def rows() -> Iterator[LedgerDraft]:
        yield from (draft(n) for n in range(230))
        # Every try of the last stage request (rows 201-230) meets a gateway error.
        postgrest.inject(Fault(method="POST", path=STAGE, status=503, times=4))

    with pytest.raises(Unavailable):
        supabase_store.import_ledger(batches_of(rows(), 10), NOW)
    assert pauses == [0.5, 2.0, 5.0]
    assert [r.status for r in postgrest.requests_to(STAGE)] == [200] * 4 + [503] * 4
    assert not postgrest.requests_to(COMMIT)
    assert (ledger_rows(postgrest), staged_rows(postgrest)) == (0, 0)


@pytest.mark.usefixtures("small_stages")
def test_an_import_whose_last_row_the_database_refuses_leaves_nothing(supabase_store, postgrest):
    """Drafts built directly, as another writer might: the ledger's CHECK refuses the last
    row when the commit moves it, and the whole import rolls back."""
    rows = [draft(n) for n in range(229)]
    rows.append(LedgerDraft("acct_1QpL8HLkdIwHu7ix", "booking_fee", 100, "usd", NOW))
    with pytest.raises(DataRefused) as refused:
        supabase_store.import_ledger(batches_of(rows, 50), NOW)
    assert refused.value.sqlstate == "23514"
    assert (ledger_rows(postgrest), staged_rows(postgrest)) == (0, 0)


@pytest.mark.usefixtures("small_stages")
def test_a_commit_whose_answer_is_lost_is_looked_up_not_repeated(supabase_store, postgrest, pauses):
    postgrest.inject(Fault(method="POST", path=COMMIT, after_commit=True, drop=True))
    outcome = supabase_store.import_ledger(batches_of(draft(n) for n in range(230)), NOW)
    # The import's state holds the verdict of the commit that did happen.
    assert (outcome.inserted, outcome.duplicates) == (230, 0)
    assert [r.status for r in postgrest.requests_to(COMMIT)] == [None]
    assert len(postgrest.requests_to(STATE)) == 1
    assert ledger_rows(postgrest) == 230


@pytest.mark.usefixtures("small_stages")
def test_a_commit_outliving_the_clients_timeout_is_waited_for(postgrest, supabase_store, pauses):
    """Another session holds the ledger, so the commit waits inside its transaction past
    the client's timeout; the store sees it still committing and waits for its verdict."""
    impatient = SupabaseStore(postgrest.url, postgrest.keys.secret, timeout=1.5)
    blocker = psycopg.connect(postgrest.database_url)
    blocker.execute("LOCK TABLE billing_usage_ledger IN SHARE MODE")

    def pause(self: Any, seconds: float) -> None:
        pauses.append(seconds)
        if seconds == finance.COMMIT_POLL_SECONDS:
            blocker.rollback()  # seen committing: the commit may go on now
        time.sleep(0.05)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(finance.SupabaseFinance, "_pause", pause)
            outcome = impatient.import_ledger(batches_of(draft(n) for n in range(120)), NOW)
    finally:
        blocker.close()
        impatient._api.close()
    assert (outcome.inserted, outcome.duplicates) == (120, 0)
    assert len(postgrest.requests_to(COMMIT)) == 1  # waited for, never sent again
    assert finance.COMMIT_POLL_SECONDS in pauses
    assert ledger_rows(postgrest) == 120


@pytest.mark.usefixtures("small_stages")
def test_a_commit_that_never_runs_is_sent_twice_then_refused_leaving_nothing(
    supabase_store, postgrest, pauses
):
    postgrest.inject(Fault(method="POST", path=COMMIT, status=503, times=2))
    with pytest.raises(StoreError, match="nothing was recorded") as failed:
        supabase_store.import_ledger(batches_of(draft(n) for n in range(230)), NOW)
    assert "BILLING_DATABASE_URL" in (failed.value.hint or "")
    assert [r.status for r in postgrest.requests_to(COMMIT)] == [503, 503]
    assert (ledger_rows(postgrest), staged_rows(postgrest)) == (0, 0)


@pytest.mark.usefixtures("small_stages")
def test_a_commit_whose_fate_cannot_be_learned_says_so(supabase_store, postgrest, pauses):
    postgrest.inject(Fault(method="POST", path=COMMIT, after_commit=True, drop=True))
    postgrest.inject(Fault(method="POST", path=STATE, status=503, times=4))
    with pytest.raises(Unavailable, match="may or may not be recorded") as unknown:
        supabase_store.import_ledger(batches_of(draft(n) for n in range(230)), NOW)
    assert "ledger list" in (unknown.value.hint or "")
    # It was: the commit ran before its answer was lost, and the staging is gone with it.
    assert (ledger_rows(postgrest), staged_rows(postgrest)) == (230, 0)


@pytest.mark.usefixtures("small_stages")
def test_a_stage_whose_answer_is_lost_is_sent_again_and_stages_once(
    supabase_store, postgrest, pauses
):
    postgrest.inject(Fault(method="POST", path=STAGE, after_commit=True, drop=True))
    outcome = supabase_store.import_ledger(batches_of(draft(n) for n in range(230)), NOW)
    assert (outcome.inserted, outcome.duplicates) == (230, 0)
    assert [r.status for r in postgrest.requests_to(STAGE)] == [None] + [200] * 5
    assert ledger_rows(postgrest) == 230


def test_an_import_that_times_out_is_repeated_and_records_once(postgrest, supabase_store, pauses):
    """The first request is held past the client's timeout and only then runs, as behind a
    slow gateway: no commit holds the import meanwhile, so it is sent again; the late
    original then finds the verdict and records nothing."""
    impatient = SupabaseStore(postgrest.url, postgrest.keys.secret, timeout=0.5)
    postgrest.inject(Fault(method="POST", path=ONE_CALL, delay=1.5))
    outcome = impatient.import_ledger(batches_of(draft(n) for n in range(40)), NOW)
    assert (outcome.inserted, outcome.duplicates) == (40, 0)
    deadline = time.monotonic() + 10
    while len(postgrest.requests_to(ONE_CALL)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the stand-in still holds the original request
    impatient._api.close()
    assert [r.status for r in postgrest.requests_to(ONE_CALL)] == [200, 200]
    assert ledger_rows(postgrest) == 40


@pytest.mark.usefixtures("small_stages")
def test_running_an_import_again_after_a_failure_counts_duplicates(supabase_store, postgrest):
    rows = [draft(n) for n in range(230)]
    first = supabase_store.import_ledger(batches_of(rows), NOW)
    again = supabase_store.import_ledger(batches_of(rows), NOW + timedelta(minutes=5))
    assert ((first.inserted, first.duplicates), (again.inserted, again.duplicates)) == (
        (230, 0),
        (0, 230),
    )
    assert ledger_rows(postgrest) == 230


@pytest.mark.usefixtures("small_stages")
def test_a_reused_external_id_with_other_facts_is_refused_naming_both_versions(
    supabase_store, postgrest
):
    recorded, _ = supabase_store.record_ledger_entry(draft(9_000), NOW)
    with pytest.raises(ExternalIdConflicts) as added:
        supabase_store.record_ledger_entry(draft(9_000, amount="9.00"), NOW)
    assert added.value.message == (
        f"external_id bk_2026_11_09000 already names entry {recorded.id}, with other values: "
        f"amount 9000.25 usd (entry {recorded.id}) vs 9.00 usd (given)"
    )
    rows = [draft(n) for n in range(230)]
    rows[179] = draft(9_000, kind="subscription")  # row 180 reuses the recorded entry's id
    rows[219] = draft(6, currency="eur")  # row 220 reuses row 7's id
    with pytest.raises(ExternalIdConflicts) as imported:
        supabase_store.import_ledger(batches_of(rows, 25), NOW)
    found = [(c.given_row, c.recorded_row, c.recorded_entry_id) for c in imported.value.conflicts]
    assert found == [(180, None, recorded.id), (220, 7, None)]
    assert imported.value.count == 2
    assert imported.value.conflicts[1].recorded == EntryFacts.of(draft(6))
    assert imported.value.conflicts[1].given == EntryFacts.of(draft(6, currency="eur"))
    assert (ledger_rows(postgrest), staged_rows(postgrest)) == (1, 0)


@pytest.mark.usefixtures("small_stages")
def test_many_conflicts_in_a_staged_import_list_twenty_and_count_all(supabase_store, postgrest):
    rows = [draft(n) for n in range(100)] + [draft(n, amount="0.01") for n in range(100)]
    with pytest.raises(ExternalIdConflicts) as raised:
        supabase_store.import_ledger(batches_of(rows), NOW)
    assert raised.value.count == 100
    assert [c.given_row for c in raised.value.conflicts] == list(range(101, 121))
    assert ledger_rows(postgrest) == 0


@pytest.mark.usefixtures("small_stages")
def test_a_dry_run_larger_than_one_request_judges_every_row_and_writes_nothing(
    supabase_store, postgrest
):
    supabase_store.record_ledger_entry(draft(3), NOW)
    rows = [draft(n) for n in range(230)] + [draft(n) for n in range(10)]
    outcome = supabase_store.import_ledger(batches_of(rows), NOW, dry_run=True)
    assert (outcome.inserted, outcome.duplicates) == (229, 11)
    assert (ledger_rows(postgrest), staged_rows(postgrest)) == (1, 0)
    real = supabase_store.import_ledger(batches_of(rows), NOW)
    assert (real.inserted, real.duplicates) == (229, 11)


@pytest.mark.usefixtures("small_stages")
def test_an_abandoned_staging_is_cleaned_up_by_the_next_import(supabase_store, postgrest):
    abandoned, recent = str(uuid.uuid4()), str(uuid.uuid4())
    for import_id in (abandoned, recent):
        supabase_store._api.rpc(
            "billing_api_ledger_import_stage",
            {
                "p_import_id": import_id,
                "p_first_seq": 1,
                "p_rows": [
                    [CUSTOMER, "booking_fee", 100, "usd", NOW.isoformat(), None, None, None]
                ],
            },
        )
    # The process staging `abandoned` died two hours ago; `recent` is still being read.
    postgrest.sql(
        "UPDATE billing_ledger_imports SET touched_at = now() - interval '2 hours' "
        "WHERE import_id = %s",
        (abandoned,),
    )
    supabase_store.import_ledger(batches_of(draft(n) for n in range(60)), NOW)
    left = postgrest.sql("SELECT import_id::text FROM billing_ledger_import_rows")
    assert left == [(recent,)]
    # A stage of the abandoned import, arriving now, says what happened.
    with pytest.raises(StoreError, match="cleaned up"):
        supabase_store._api.rpc(
            "billing_api_ledger_import_stage",
            {"p_import_id": abandoned, "p_first_seq": 2, "p_rows": []},
        )


def test_the_staging_tables_are_closed_to_the_api_roles(supabase_store, postgrest):
    anon = postgrest.client(postgrest.keys.anon)
    for table in ("billing_ledger_imports", "billing_ledger_import_rows"):
        with pytest.raises(Exception) as denied:
            anon.table(table).select("*").execute()
        assert getattr(denied.value, "code", None) == "42501"
    anonymous = SupabaseStore(postgrest.url, postgrest.keys.anon)
    with pytest.raises(ConfigError):
        anonymous.import_ledger(batches_of([draft(1)]), NOW)
    assert ledger_rows(postgrest) == 0


def test_two_sessions_committing_one_external_id_race_and_the_second_is_refused(
    supabase_store, postgrest
):
    """Called directly on PostgreSQL: the second commit waits for the first (ON CONFLICT),
    then judges the entry the first one committed."""
    rows = [
        [CUSTOMER, "booking_fee", 250, "usd", NOW.isoformat(), INVOICE, None, "bk_race"],
        [CUSTOMER, "booking_fee", 100, "usd", NOW.isoformat(), None, None, "bk_other"],
    ]
    rival = [[CUSTOMER, "booking_fee", 999, "usd", NOW.isoformat(), INVOICE, None, "bk_race"]]
    call = "SELECT billing_api_import_ledger(%s, %s::jsonb, %s, false)"
    verdicts: list[Any] = []
    with psycopg.connect(postgrest.database_url) as first:
        first.execute(call, (uuid.uuid4(), psycopg.types.json.Jsonb(rows), NOW))

        def second() -> None:
            with psycopg.connect(postgrest.database_url, autocommit=True) as conn:
                verdicts.append(
                    conn.execute(
                        call, (uuid.uuid4(), psycopg.types.json.Jsonb(rival), NOW)
                    ).fetchone()[0]  # type: ignore[index]
                )

        racing = threading.Thread(target=second)
        racing.start()
        racing.join(0.5)
        assert racing.is_alive()  # waiting for the first session's entry
        first.commit()
        racing.join(10)
    (verdict,) = verdicts
    (conflict,) = verdict["conflicts"]
    recorded_id = postgrest.sql("SELECT id FROM billing_usage_ledger WHERE external_id = 'bk_race'")
    assert (conflict["given_row"], conflict["entry_id"], conflict["recorded_row"]) == (
        1,
        recorded_id[0][0],
        None,
    )
    assert (conflict["recorded"]["amount"], conflict["given"]["amount"]) == (250, 999)
    assert ledger_rows(postgrest) == 2


# --- reads larger than the row cap ------------------------------------------------------


def test_a_ledger_list_larger_than_the_cap_loses_nothing(supabase_store, postgrest):
    supabase_store.import_ledger(batches_of(draft(n) for n in range(1_234)), NOW)
    postgrest.max_rows = 50
    entries = supabase_store.list_ledger(LedgerQuery(limit=5_000))
    assert len(entries) == len({e.id for e in entries}) == 1_234
    assert entries == sorted(entries, key=lambda e: (e.occurred_at, e.id), reverse=True)
    assert supabase_store.count_ledger(LedgerQuery(limit=1)) == 1_234
    assert len(supabase_store.list_ledger(LedgerQuery(limit=501))) == 501
    customer_only = LedgerQuery(customer_id=CUSTOMER, since=NOW - timedelta(days=2), limit=700)
    assert len(supabase_store.list_ledger(customer_only)) == 700


def test_exports_larger_than_the_cap_lose_nothing(supabase_store, owner_store, postgrest):
    supabase_store.import_ledger(
        batches_of(draft(n, customer_id=f"cus_QTest{n % 7:05d}") for n in range(2_345)), NOW
    )
    postgrest.sql(
        "INSERT INTO billing_alerts (type, dedupe_key, customer_id, invoice_id, amount_due, "
        "currency, created_at, updated_at) SELECT 'invoice_failed', 'invoice_failed:in_' || n, "
        "%s, 'in_1QpL8HLkdIwHu7ix' || lpad(n::text, 8, '0'), 4900, 'usd', "
        "%s - n * interval '1 minute', %s FROM generate_series(1, 120) AS n",
        (CUSTOMER, NOW, NOW),
    )
    postgrest.sql(
        "INSERT INTO billing_dunning_events (invoice_id, customer_id, day, channel, template, "
        "due_at) SELECT 'in_1QpL8HLkdIwHu7ix' || lpad(n::text, 8, '0'), %s, 0, 'email', "
        "'day0_email', %s - n * interval '1 minute' FROM generate_series(1, 130) AS n",
        (CUSTOMER, NOW),
    )
    postgrest.max_rows = 50
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    entries = list(supabase_store.stream_ledger(window))
    assert entries == list(owner_store.stream_ledger(window))
    assert len(entries) == 2_345
    chunks = list(supabase_store.ledger_csv_chunks(window))
    assert "".join(text for text, _ in chunks) == "".join(map(ledger_line, entries))
    assert [rows for _, rows in chunks] == [2_000, 345]
    alerts = list(supabase_store.stream_alerts(window))
    assert alerts == list(owner_store.stream_alerts(window))
    assert len(alerts) == 120
    steps = list(supabase_store.stream_dunning(window))
    assert steps == list(owner_store.stream_dunning(window))
    assert len(steps) == 130
    counts = {
        name: supabase_store.export_row_count(name, window)
        for name in ("ledger", "alerts", "dunning", "reconciliation")
    }
    assert counts == {"ledger": 2_345, "alerts": 120, "dunning": 130, "reconciliation": None}


def test_the_ledger_export_is_the_ledger_as_it_was_when_it_started(supabase_store, monkeypatch):
    monkeypatch.setattr(finance, "EXPORT_PAGE_ROWS", 2)
    for n in range(6):
        supabase_store.record_ledger_entry(draft(n, occurred_at=NOW - timedelta(hours=6 - n)), NOW)
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    chunks = supabase_store.ledger_csv_chunks(window)
    first_text, _ = next(chunks)
    # Recorded while the export runs: one between rows of later pages, one after the last.
    supabase_store.record_ledger_entry(draft(77, occurred_at=NOW - timedelta(hours=2.5)), NOW)
    supabase_store.record_ledger_entry(draft(99, occurred_at=NOW - timedelta(minutes=1)), NOW)
    text = first_text + "".join(text for text, _ in chunks)
    assert [row[9] for row in csv.reader(io.StringIO(text))] == [
        f"bk_2026_11_{n:05d}" for n in range(6)
    ]
    assert len(list(supabase_store.stream_ledger(window))) == 8


def test_database_built_lines_equal_the_python_specification(supabase_store):
    for n, text in enumerate(TRICKY):
        supabase_store.record_ledger_entry(
            LedgerDraft(
                customer_id=f"cus_{n}",
                kind="credit_adjustment" if n % 3 == 0 else "booking_fee",
                amount=n * 101 * (-1 if n % 3 == 0 else 1),
                currency=("usd", "jpy", "kwd", "bhd", "eur")[n % 5],
                occurred_at=NOW - timedelta(days=(len(TRICKY) - n) / 10, microseconds=n),
                invoice_id=f"in_{text}" if n % 2 else None,
                description=text,
                external_id=text or None,
            ),
            NOW + timedelta(microseconds=123),
        )
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    expected = "".join(ledger_line(e) for e in supabase_store.stream_ledger(window))
    assert "".join(text for text, _ in supabase_store.ledger_csv_chunks(window)) == expected
    assert "2026-11-24T12:00:00.000123Z" in expected


# --- finance figures: the PostgreSQL store's, on the same data --------------------------


def test_finance_figures_equal_the_postgres_stores(supabase_store, owner_store):
    seed(owner_store)
    fee = make_draft(
        customer_id="cus_A",
        kind="booking_fee",
        amount="3.10",
        currency="eur",  # cus_A in two currencies: never summed together
        occurred_at=NOW - timedelta(days=2),
        invoice_id="in_due",
    )
    owner_store.record_ledger_entry(fee, NOW)
    window = Window(start=NOW - timedelta(days=30), end=NOW)
    for method, args in [
        ("ledger_window_totals", (window,)),
        ("ledger_window_totals", (window, "cus_A")),
        ("mirror_invoice_totals", (window,)),
        ("mirror_invoice_totals", (window, "cus_B")),
        ("mirror_invoice_count", (window,)),
        ("mirror_invoices", (window, "cus_A")),
        ("ledger_entries", (window, "cus_A")),
        ("ledger_sums_by_invoice", (["in_due", *(f"in_{n}" for n in range(1_500))],)),
        ("past_due_invoices", (NOW,)),
        ("open_alerts", ()),
        ("ledger_kind_totals", (window, "booking_fee")),
        ("ledger_kind_totals", (window, "credit_adjustment")),
        ("open_alert_counts", ()),
        ("past_due_totals", (NOW,)),
        ("dunning_workload", (NOW + timedelta(hours=12),)),
    ]:
        through_rest = getattr(supabase_store, method)(*args)
        assert through_rest == getattr(owner_store, method)(*args), method
    totals = supabase_store.ledger_window_totals(window, "cus_A")
    assert totals == {("cus_A", "usd"): 250 - 400 + 9_900, ("cus_A", "eur"): 310}
    assert [s.id for s in supabase_store.recurring_subscriptions()] == [
        s.id for s in owner_store.recurring_subscriptions()
    ]
    assert [s.raw for s in supabase_store.recurring_subscriptions()] == [
        s.raw for s in owner_store.recurring_subscriptions()
    ]


def test_paged_finance_lists_larger_than_the_cap_lose_nothing(
    supabase_store, owner_store, postgrest
):
    postgrest.sql(
        "INSERT INTO billing_invoices (id, customer_id, status, currency, amount_due, "
        "amount_remaining, total, attempt_count, raw, stripe_created, stripe_updated_at, "
        "due_date) SELECT 'in_1QpL8HLkdIwHu7ix' || lpad(n::text, 8, '0'), %s, 'open', "
        "CASE WHEN n %% 2 = 0 THEN 'usd' ELSE 'eur' END, 1000 + n, 1000 + n, 1000 + n, n %% 2, "
        "jsonb_build_object('id', 'in_1QpL8HLkdIwHu7ix' || lpad(n::text, 8, '0'), "
        "'object', 'invoice', 'customer', %s::text, 'status', 'open', 'currency', "
        "CASE WHEN n %% 2 = 0 THEN 'usd' ELSE 'eur' END, 'total', 1000 + n, "
        "'amount_due', 1000 + n, 'created', 1763000000 + n), "
        "%s - n * interval '1 hour', %s, CASE WHEN n %% 6 = 3 THEN NULL ELSE %s END "
        "FROM generate_series(1, 260) AS n",
        (CUSTOMER, CUSTOMER, NOW, NOW, NOW - timedelta(days=1)),
    )  # every one past due: overdue, or (no due date) failed once
    postgrest.sql(
        "INSERT INTO billing_alerts (type, dedupe_key, customer_id, created_at, updated_at) "
        "SELECT 'threshold_exceeded', 'threshold:' || n, %s, %s::timestamptz, %s::timestamptz "
        "FROM generate_series(1, 70) AS n",
        (CUSTOMER, NOW, NOW),  # all at one moment: pages split ties by id
    )
    postgrest.max_rows = 50
    window = Window(start=NOW - timedelta(days=30), end=NOW + timedelta(days=1))
    past_due = supabase_store.past_due_invoices(NOW)
    assert past_due == owner_store.past_due_invoices(NOW)
    assert len(past_due) == 260
    invoices = supabase_store.mirror_invoices(window, CUSTOMER)
    assert [i.id for i in invoices] == [i.id for i in owner_store.mirror_invoices(window, CUSTOMER)]
    assert len(invoices) == 260
    assert supabase_store.open_alerts() == owner_store.open_alerts()
    assert len(supabase_store.open_alerts()) == 70
    count, amounts = supabase_store.past_due_totals(NOW)
    assert count == 260
    assert amounts == {
        "usd": sum(1000 + n for n in range(2, 261, 2)),
        "eur": sum(1000 + n for n in range(1, 261, 2)),
    }


# --- audit ---------------------------------------------------------------------------------


def test_audit_lines_larger_than_the_cap_lose_nothing(supabase_store, owner_store, postgrest):
    for n in range(130):
        supabase_store.append_audit(
            AuditDraft(
                "ann@cloudgreet.example",
                "invoice.retry",
                INVOICE if n % 2 else "in_1QpL8HLkdIwHu7ixl4OzzPMw",
                "intent" if n < 65 else "paid",
                f"retry-{INVOICE}-{n // 2}",
                {"amount_due": 4_900, "currency": "usd", "note": None},
            ),
            NOW + timedelta(seconds=n // 4),  # four lines a second: pages split ties by id
        )
    postgrest.max_rows = 50
    trail = supabase_store.audit_trail(INVOICE, limit=1_000)
    assert trail == owner_store.audit_trail(INVOICE, limit=1_000)
    assert len(trail) == 65
    assert trail[0].details == {"amount_due": 4_900, "currency": "usd", "note": None}
    assert len(supabase_store.audit_trail(INVOICE)) == 65
    assert len(supabase_store.audit_trail(INVOICE, limit=10)) == 10
    since, until = NOW + timedelta(seconds=2), NOW + timedelta(seconds=30)
    between = supabase_store.audit_between(since, until)
    assert between == owner_store.audit_between(since, until)
    assert len(between) == 112  # seconds 2 to 29, four lines each
    assert supabase_store.audit_between(since, until, limit=3) == between[:3]
