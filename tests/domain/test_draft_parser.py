"""The import's ``DraftParser`` is ``make_draft``: same drafts, same first error, any row."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgreet_billing.adapters.store.sqlite import SqliteStore
from cloudgreet_billing.domain.ledger import DraftParser, LedgerDraft, make_draft
from cloudgreet_billing.domain.ledger_batch import LedgerBatch
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services.ledger_csv import ALL_COLUMNS

NOW = datetime(2026, 11, 24, tzinfo=UTC)
# The import's columns, in the order the parser takes them.
FIELDS = ALL_COLUMNS

# Mostly well-formed values, with the near misses a real file has.
customers = st.sampled_from(["cus_1", " cus_2 ", "cus_", "cust_3", "", "CUS_4", "cus_x y"])
kinds = st.sampled_from(["booking_fee", "subscription", "credit_adjustment", " booking_fee", "fee"])
amounts = st.one_of(
    st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False).map(str),
    st.sampled_from(["12", "12.345", "-0.50", "1e3", "", " 7.10 ", "abc", "0.001", "-3"]),
)
currencies = st.sampled_from(["usd", "USD", "jpy", "kwd", "us", "eur ", "u$d"])
times = st.sampled_from(
    ["2026-11-01", "2026-11-01T09:30:00Z", "2026-11-01T09:30:00+02:00", "2026-13-01", "x", ""]
)
optional = st.one_of(st.none(), st.sampled_from(["", "  ", "in_1", " in_2 ", "in_", "inv_3"]))
texts = st.one_of(st.none(), st.sampled_from(["", " a note ", "=SUM(A1)", "x"]))


def outcome(make, row: dict[str, str | None]) -> LedgerDraft | str:
    try:
        return make(row)
    except BadInput as exc:
        return f"error: {exc.message}"


@settings(max_examples=400)
@given(
    st.fixed_dictionaries(
        {
            "customer_id": customers,
            "kind": kinds,
            "amount": amounts,
            "currency": currencies,
            "occurred_at": times,
            "invoice_id": optional,
            "description": texts,
            "external_id": texts,
        }
    )
)
def test_the_parser_gives_what_make_draft_gives(row):
    parse = DraftParser()
    expected = outcome(lambda r: make_draft(**r), row)
    # Twice: the second time every field comes from the parser's memos.
    for _ in range(2):
        assert outcome(lambda r: parse(*(r[name] for name in FIELDS)), row) == expected


def test_a_full_memo_starts_again(monkeypatch):
    monkeypatch.setattr(DraftParser, "MEMO_LIMIT", 3)
    parse = DraftParser()
    for cents in range(10):
        draft = parse("cus_1", "booking_fee", f"1.{cents:02d}", "usd", f"2026-11-0{1 + cents % 9}")
        assert draft.amount == 100 + cents
    assert len(parse._minor_units) <= 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(customers, kinds, amounts, currencies, times, optional), max_size=5))
def test_every_accepted_draft_satisfies_the_ledgers_checks(tmp_path_factory, rows):
    # The bulk load skips SQLite's CHECK constraints because validation restates them;
    # here they are on (a small import), so a draft they reject would raise.
    drafts = []
    for customer, kind, amount, currency, occurred_at, invoice in rows:
        try:
            drafts.append(
                make_draft(
                    customer_id=customer,
                    kind=kind,
                    amount=amount,
                    currency=currency,
                    occurred_at=occurred_at,
                    invoice_id=invoice,
                )
            )
        except BadInput:
            continue
    store = SqliteStore(tmp_path_factory.mktemp("checks") / "ledger.db")
    store.migrate()
    try:
        outcome = store.import_ledger([LedgerBatch.of(drafts)], NOW)
    except sqlite3.IntegrityError as exc:  # pragma: no cover - the failure this guards
        pytest.fail(f"a validated draft broke a CHECK: {exc}")
    finally:
        store.close()
    assert outcome.inserted == len(drafts)
