"""Reading a ledger CSV: the plain-line splitter and ``csv.reader`` give the same rows.

The reference here is the straightforward reading: ``csv.reader`` over the whole file and
``make_draft`` for every row, with each error on the reader's ``line_num``. The import
must give the same drafts, or the same errors, whatever mix of plain lines, quoted cells,
line breaks inside cells, CRLF, blank lines and wrong widths the file holds, and wherever
its batches happen to end.
"""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgreet_billing.domain.ledger import LedgerDraft, make_draft
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services import ledger_csv
from cloudgreet_billing.services.ledger_csv import ALL_COLUMNS, LedgerCsv

HEADER = ",".join(ALL_COLUMNS)

plain_rows = st.tuples(
    st.sampled_from(["cus_1", "cus_2", " cus_3", "cus_"]),
    st.sampled_from(["booking_fee", "subscription", "credit_adjustment", "refund"]),
    st.sampled_from(["1.50", "-2.25", "3", "0.001", "x"]),
    st.sampled_from(["usd", "USD", "jpy"]),
    st.sampled_from(["2026-11-01", "2026-11-01T09:30:00Z", "2026-13-01"]),
    st.sampled_from(["", "in_1", "in_"]),
    st.sampled_from(["", "a note", " padded ", "=SUM(A1)", "x, with a comma", 'say "hi"']),
    st.sampled_from(["", "e1", "e2", "e3"]),
).map(list)
multiline_description = st.sampled_from(["two\nlines", "crlf\r\ninside", "cr\ronly"])


@st.composite
def csv_lines(draw) -> str:
    cells = draw(plain_rows)
    shape = draw(st.sampled_from(["plain", "plain", "quote all", "multiline", "wide", "narrow"]))
    if shape == "multiline":
        cells[6] = draw(multiline_description)
    elif shape == "wide":
        cells.append("extra")
    elif shape == "narrow":
        cells = cells[:7]
    out = io.StringIO()
    csv.writer(
        out,
        lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
        quoting=csv.QUOTE_ALL if shape == "quote all" else csv.QUOTE_MINIMAL,
    ).writerow(cells)
    return out.getvalue()


@st.composite
def csv_files(draw) -> str:
    lines = draw(st.lists(st.one_of(csv_lines(), st.sampled_from(["\n", "  \n"])), max_size=14))
    text = HEADER + "\n" + "".join(lines)
    if draw(st.booleans()):
        text = text.removesuffix("\n").removesuffix("\r")
    return text


def reference(text: str) -> tuple[list[LedgerDraft], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    drafts, errors, rows = [], [], 0
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        rows += 1
        if len(row) != len(ALL_COLUMNS):
            errors.append(f"line {reader.line_num}: expected 8 columns, found {len(row)}")
            continue
        try:
            drafts.append(make_draft(**dict(zip(ALL_COLUMNS, row, strict=True))))
        except BadInput as exc:
            errors.append(f"line {reader.line_num}: {exc.message}")
    if not rows:
        return [], ["usage.csv has no rows"]
    return drafts, errors


def imported(text: str) -> tuple[list[LedgerDraft], list[str]]:
    rows = LedgerCsv(io.StringIO(text, newline=""), "usage.csv")
    drafts: list[LedgerDraft] = []
    try:
        for batch in rows:
            drafts.extend(batch.drafts())
    except BadInput as exc:
        return [], exc.details.get("errors", [exc.message])
    return drafts, []


@settings(max_examples=300, deadline=None)
@given(text=csv_files(), batch_rows=st.sampled_from([1, 2, 3, 500]))
def test_the_import_reads_what_csv_reader_and_make_draft_read(text, batch_rows):
    expected_drafts, expected_errors = reference(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_csv, "BATCH_ROWS", batch_rows)
        drafts, errors = imported(text)
    assert errors == expected_errors
    if not expected_errors:
        assert drafts == expected_drafts


def test_plain_files_are_split_without_csv_reader(monkeypatch):
    lines = [f"cus_{n},booking_fee,1.{n % 100:02d},usd,2026-11-01,,,e{n}\n" for n in range(1200)]
    text = HEADER + "\n" + "".join(lines)
    read_by_reader = []
    real_read_rows = LedgerCsv._read_rows

    def spy(self):
        rows = real_read_rows(self)
        read_by_reader.extend(rows)
        return rows

    monkeypatch.setattr(LedgerCsv, "_read_rows", spy)
    drafts, errors = imported(text)
    assert errors == [] and len(drafts) == 1200
    assert drafts[1199].amount == 199 and drafts[1199].external_id == "e1199"
    # Only the header goes through csv.reader (it decides the file's layout).
    assert read_by_reader == []


def test_a_quoted_cell_across_a_batch_boundary_is_read_whole(monkeypatch):
    monkeypatch.setattr(ledger_csv, "BATCH_ROWS", 2)
    text = (
        HEADER
        + "\ncus_1,booking_fee,1,usd,2026-11-01,,,e1\n"
        + 'cus_2,booking_fee,2,usd,2026-11-01,,"first line\nsecond line",e2\n'
        + "cus_3,booking_fee,3,usd,2026-11-01,,,e3\n"
        + "cus_4,booking_fee,x,usd,2026-11-01,,,e4\n"
    )
    _, errors = imported(text)
    # The quoted cell is read whole (and refused: a description is one line), and the
    # lines after it are counted right.
    assert errors == [
        "line 4: description 'first line\\nsecond line' contains a control character "
        "(U+000A, '\\n') at position 10",
        "line 6: amount 'x' is not a number",
    ]
    _, errors = imported(text.replace(",x,", ",4,"))
    assert errors == [
        "line 4: description 'first line\\nsecond line' contains a control character "
        "(U+000A, '\\n') at position 10"
    ]


def test_an_unreadable_row_is_reported_with_the_bad_rows_before_it(monkeypatch):
    limit = csv.field_size_limit()
    csv.field_size_limit(40)
    try:
        text = (
            HEADER
            + "\ncus_1,booking_fee,x,usd,2026-11-01,,,e1\n"
            + f'cus_2,booking_fee,2,usd,2026-11-01,,"{"long " * 20}",e2\n'
        )
        _, errors = imported(text)
    finally:
        csv.field_size_limit(limit)
    assert errors[0] == "line 2: amount 'x' is not a number"
    assert errors[1].startswith("line 3: unreadable CSV (field larger than field limit")
