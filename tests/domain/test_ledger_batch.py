"""``BatchParser`` gives exactly the drafts ``make_draft`` gives, or declines the batch."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgreet_billing.domain.ledger import LedgerDraft, make_draft
from cloudgreet_billing.domain.ledger_batch import BatchParser, LedgerBatch, batches_of
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services.ledger_csv import ALL_COLUMNS

# Canonical values, the near misses a real file has, and bad ones.
cells = {
    "customer_id": st.sampled_from(["cus_1", "cus_2", " cus_3", "cus_4 ", "cus_", "cust_5", ""]),
    "kind": st.sampled_from(["booking_fee", "subscription", "credit_adjustment", " fee"]),
    "amount": st.one_of(
        st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False).map(str),
        st.sampled_from(["12", "12.345", "-0.50", "1e3", "", " 7.10 ", "+3", "0.001", "1_000"]),
    ),
    "currency": st.sampled_from(["usd", "usd", "jpy", "kwd", "USD", "us", "eur "]),
    "occurred_at": st.sampled_from(
        ["2026-11-01", "2026-11-01T09:30:00Z", "2026-11-01T09:30:00+02:00", "2026-13-01", ""]
    ),
    "invoice_id": st.sampled_from(["", "", "in_1", " in_2", "in_", "inv_3", "  "]),
    "description": st.sampled_from(["", "a note", " padded ", "=SUM(A1)", "  "]),
    "external_id": st.sampled_from(["", "e1", " e2 ", "e3"]),
}
rows = st.fixed_dictionaries(cells)


def row_by_row(batch: list[dict[str, str]]) -> list[LedgerDraft] | None:
    try:
        return [make_draft(**row) for row in batch]
    except BadInput:
        return None


def columns(batch: list[dict[str, str]]) -> list[tuple[str, ...]]:
    return [tuple(row[name] for row in batch) for name in ALL_COLUMNS]


@settings(max_examples=500)
@given(st.lists(rows, min_size=1, max_size=6))
def test_a_batch_gives_make_drafts_drafts_or_is_declined(batch):
    parse = BatchParser()
    expected = row_by_row(batch)
    # Twice: the second time the values come from the parser's memos.
    for _ in range(2):
        parsed = parse(columns(batch))
        if parsed is not None:
            assert expected is not None, "a batch with a bad row was accepted"
            assert list(parsed.drafts()) == expected


canonical_rows = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(["cus_1", "cus_2"]),
        "kind": st.sampled_from(["booking_fee", "subscription"]),
        "amount": st.integers(0, 10**6).map(lambda cents: f"{cents // 100}.{cents % 100:02d}"),
        "currency": st.sampled_from(["usd", "eur"]),
        "occurred_at": st.sampled_from(["2026-11-01", "2026-11-01T09:30:00Z"]),
        "invoice_id": st.sampled_from(["", "in_1"]),
        "description": st.sampled_from(["", "a note", " padded "]),
        "external_id": st.sampled_from(["", "e1"]),
    }
)


@given(st.lists(canonical_rows, min_size=1, max_size=6))
def test_canonical_batches_take_the_column_path(batch):
    parsed = BatchParser()(columns(batch))
    assert parsed is not None
    assert list(parsed.drafts()) == row_by_row(batch)


def test_optional_columns_a_file_lacks_are_none():
    parsed = BatchParser()(
        [("cus_1",), ("credit_adjustment",), ("-1.5",), ("usd",), ("2026-11-01",), None, None, None]
    )
    assert parsed is not None
    assert list(parsed.drafts()) == [
        LedgerDraft(
            customer_id="cus_1",
            kind="credit_adjustment",
            amount=-150,
            currency="usd",
            occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
        )
    ]


def test_negative_amounts_outside_credit_adjustments_are_declined():
    batch = [("cus_1", "cus_1"), ("credit_adjustment", "booking_fee"), ("-1", "-2")]
    rest = [("usd", "usd"), ("2026-11-01", "2026-11-01"), None, None, None]
    assert BatchParser()(batch + rest) is None


def test_batches_round_trip_drafts():
    drafts = [
        make_draft(
            customer_id=f"cus_{n}",
            kind="booking_fee",
            amount="1",
            currency="usd",
            occurred_at="2026-11-01",
        )
        for n in range(5)
    ]
    batches = list(batches_of(drafts, size=2))
    assert [batch.size for batch in batches] == [2, 2, 1]
    assert [draft for batch in batches for draft in batch.drafts()] == drafts
    assert LedgerBatch.of([]).size == 0
