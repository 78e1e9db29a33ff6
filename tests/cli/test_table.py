"""``print_table`` on terminals of several widths, with and without colour, and to a pipe."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from cloudgreet_billing.cli.table import Column, Styled, escape_tsv, print_table, relative

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
CUSTOMER = "cus_Qf3kZ8aB1cD2eF3gH4iJ5kL"

COLUMNS = [
    Column("invoice", "id"),
    Column("amount", "money"),
    Column("status", "status"),
    Column("name", "text", drop=2),
    Column("created", "time", drop=3),
    Column("note", "prose", drop=1),
]
ROWS = [
    [INVOICE, "$1,490.00", Styled("MISMATCH"), "Bright Smiles Dental", NOW - timedelta(hours=3),
     "called the owner, card updated tomorrow"],
    [INVOICE.replace("PMv", "Zzz"), "$9.90", "ok", "Ada", NOW - timedelta(days=2), None],
]  # fmt: skip


def draw(width: int, *, colour: bool = False, no_color: bool = False) -> str:
    screen = io.StringIO()
    console = Console(
        file=screen,
        width=width,
        force_terminal=True,
        color_system="standard" if colour else None,
        no_color=no_color,
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    print_table(COLUMNS, ROWS, console=console, now=NOW)
    return screen.getvalue()


def headers(drawn: str) -> list[str]:
    return drawn.splitlines()[0].split()


def test_a_wide_terminal_shows_every_column_and_absolute_times() -> None:
    drawn = draw(200)
    assert headers(drawn) == ["invoice", "amount", "status", "name", "created", "note"]
    assert "2026-11-24 09:00 UTC" in drawn and "called the owner, card updated tomorrow" in drawn


def test_space_running_short_makes_times_relative_then_drops_notes_names_and_dates() -> None:
    natural = max(len(line) for line in draw(200).splitlines())
    relative_times = draw(natural - 1)
    assert "3h ago" in relative_times and "2d ago" in relative_times
    assert headers(relative_times) == ["invoice", "amount", "status", "name", "created", "note"]
    assert headers(draw(90)) == ["invoice", "amount", "status", "name", "created"]
    assert headers(draw(70)) == ["invoice", "amount", "status", "created"]
    assert headers(draw(50)) == ["invoice", "amount", "status"]
    for width in (200, natural - 1, 90, 70, 50):
        drawn = draw(width)
        assert all(len(line) <= width for line in drawn.splitlines()), width
        assert INVOICE in drawn and "$1,490.00" in drawn and "MISMATCH" in drawn


def test_too_narrow_for_the_ids_gives_one_block_per_row_with_every_value() -> None:
    drawn = draw(40)
    first, second = drawn.strip("\n").split("\n\n")
    assert first.splitlines() == [
        f"invoice: {INVOICE}",
        "amount: $1,490.00  status: MISMATCH",
        "name: Bright Smiles Dental",
        "created: 2026-11-24 09:00 UTC",
        "note: called the owner, card updated tomorrow",
    ]
    assert "note:" not in second  # an empty cell is left out of its block
    assert all(len(line) <= 40 for line in first.splitlines() if "note:" not in line)


def test_a_droppable_column_empty_in_every_row_is_left_out_on_a_terminal() -> None:
    rows = [[*row[:5], None] for row in ROWS]
    screen = io.StringIO()
    console = Console(file=screen, width=200, force_terminal=True, color_system=None)
    print_table(COLUMNS, rows, console=console, now=NOW)
    assert screen.getvalue().splitlines()[0].split() == [
        "invoice", "amount", "status", "name", "created"
    ]  # fmt: skip
    piped = io.StringIO()
    print_table(COLUMNS, rows, console=Console(file=piped), now=NOW)
    assert piped.getvalue().splitlines()[0].split("\t")[-1] == "note"


def test_money_is_right_aligned() -> None:
    lines = draw(200).splitlines()
    end = lines[0].index("amount") + len("amount")
    assert lines[2][:end].endswith("$1,490.00") and lines[3][:end].endswith("$9.90")


def test_mismatch_stands_out_in_colour_but_never_with_no_color() -> None:
    coloured = draw(200, colour=True)
    assert "\x1b[1;31mMISMATCH" in coloured
    plain = draw(200, colour=True, no_color=True)
    assert "MISMATCH" in plain and "\x1b[" not in plain


def test_a_pipe_gets_a_header_and_tab_separated_full_values() -> None:
    out = io.StringIO()
    rows = [[*ROWS[0][:5], "line one\nline two\twith a tab, a \\ too"]]
    print_table(COLUMNS, rows, console=Console(file=out, width=40), now=NOW)
    assert out.getvalue().splitlines() == [
        "invoice\tamount\tstatus\tname\tcreated\tnote",
        f"{INVOICE}\t$1,490.00\tMISMATCH\tBright Smiles Dental\t2026-11-24T09:00:00Z\t"
        "line one\\nline two\\twith a tab, a \\\\ too",
    ]


def test_an_empty_listing_says_so_on_stderr_and_leaves_a_pipe_empty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    print_table(COLUMNS, [], console=Console(file=out), empty="no alerts")
    assert out.getvalue() == ""
    assert capsys.readouterr().err == "no alerts\n"


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (NOW - timedelta(seconds=20), "just now"),
        (NOW - timedelta(minutes=5), "5m ago"),
        (NOW - timedelta(hours=3, minutes=59), "3h ago"),
        (NOW - timedelta(days=40), "40d ago"),
        (NOW + timedelta(days=1, hours=2), "in 1d"),
    ],
)
def test_relative_times(moment: datetime, shown: str) -> None:
    assert relative(moment, NOW) == shown


def test_escape_tsv_keeps_one_cell_one_cell() -> None:
    assert escape_tsv("a\tb\nc\rd\\e") == "a\\tb\\nc\\rd\\\\e"
