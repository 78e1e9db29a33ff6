"""Hostile input is refused with exit 2 and one line, and writes nothing (issue 12).

Each case was tried by hand before the fix and got exit 1 "unexpected …", or was
accepted. Every test runs on SQLite and PostgreSQL against a hostile_seeded store (an alert, its
dunning steps, the mirror, a ledger entry) whose row counts must not change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from freezegun import freeze_time

from tests.cli.helpers import run
from tests.cli.hostile import NUMBER_ID_COMMANDS, json_refusal, refused
from tests.dunning.stripe_objects import CUSTOMER_ID, INVOICE_ID

BEYOND_64_BITS = "99999999999999999999"
HEADER = "customer_id,kind,amount,currency,occurred_at,invoice_id,description,external_id\n"


def ledger_add(*options: str) -> list[str]:
    """``ledger add`` with valid values, each replaced by the ``--name=value`` given."""
    given = {option.split("=", 1)[0]: option for option in options}
    valid = {
        "--customer": f"--customer={CUSTOMER_ID}",
        "--kind": "--kind=booking_fee",
        "--amount": "--amount=2.50",
        "--currency": "--currency=usd",
        "--occurred-at": "--occurred-at=2026-11-21T10:00:00Z",
        "--invoice": f"--invoice={INVOICE_ID}",
        "--description": "--description=3 bookings",
        "--external-id": "--external-id=booking-4712",
    }
    return ["ledger", "add", *(given.get(name, default) for name, default in valid.items())]


# --- ids beyond 64 bits -----------------------------------------------------------


def test_a_number_id_out_of_range_is_refused_by_every_command(hostile_seeded):
    for command in NUMBER_ID_COMMANDS:
        for number in [BEYOND_64_BITS, "9223372036854775808", "0", "²", "٣", "1" * 5000]:
            refused([*command, "--", number])
    refused(["alerts", "note", BEYOND_64_BITS, "called the owner"], "is not an alert id")


def test_a_count_beyond_64_bits_is_refused(hostile_seeded):
    refused(["alerts", "list", f"--limit={BEYOND_64_BITS}"], "--limit")
    refused(["dunning", "list", "--limit=0"], "--limit")
    refused(["export-csv", "-o", "x.csv", f"--days={BEYOND_64_BITS}"], "--days")
    refused(["reconcile", "--offline", "--days=99999999999"], "--days")


# --- a port out of range ----------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http", "0"])
def test_a_database_url_port_out_of_range_is_refused(monkeypatch, port):
    monkeypatch.setenv("BILLING_DATABASE_URL", f"postgresql://billing:hunter2@127.0.0.1:{port}/db")
    line = refused(["alerts", "list"], "BILLING_DATABASE_URL", "port")
    assert "hunter2" not in line


# --- a million-digit amount -------------------------------------------------------


def test_a_million_digit_amount_is_refused_without_echoing_it(hostile_seeded):
    line = refused(ledger_add("--amount=" + "9" * 1_000_000), "(1000000 characters)")
    assert line.count("9") < 100


def test_no_refusal_echoes_a_megabyte(hostile_seeded):
    huge = "x" * 1_000_000
    for args in [
        ["alerts", "list", f"--type={huge}"],
        ["alerts", "list", f"--status={huge}"],
        ["dunning", "list", f"--status={huge}"],
        ["quarantine", "list", f"--status={huge}"],
        ["export-csv", "-o", "x.csv", f"--dataset={huge}"],
        ["reconcile", "--offline", f"--threshold={huge}"],
        ["ledger", "list", f"--kind={huge}"],
        ["ledger", "list", f"--since={huge}"],
        ["incident", "summary", f"--since={huge}"],
        ["portal", "--dry-run", "cus_RkS5AtmBK5hCeq", f"--return-url=https://{huge}"],
    ]:
        refused(args)


def test_a_million_digit_amount_in_a_csv_is_refused_without_echoing_it(hostile_seeded, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + f"{CUSTOMER_ID},booking_fee,{'1' * 1_000_000},usd,2026-11-21,,,\n")
    error = json_refusal(run("ledger", "import", str(path), "--json"))
    assert len(error["errors"]) == 1 and "(1000000 characters)" in error["errors"][0]
    assert len(error["errors"][0]) < 200


# --- NUL, line breaks and control characters --------------------------------------


def test_control_characters_in_ledger_add_are_refused(hostile_seeded):
    for option in [
        "--customer=cus_RkS5AtmBK5hCeq\x00",
        "--customer=cus_RkS5AtmBK5hCeq\nrm",
        "--invoice=in_1QpL8HLkdIwHu7ixl4OzzPMv\r",
        "--description=3 bookings\x00",
        "--description=line one\nline two",
        "--description=\x1b[31mred\x1b[0m",
        "--external-id=booking\t4712",
        "--external-id=booking\u2028x",
    ]:
        refused(ledger_add(option), option.split("=")[0], "control character")


def test_control_characters_in_ids_and_text_are_refused_by_every_command(hostile_seeded):
    for args in [
        ["alerts", "note", "1", "called\x00the owner"],
        ["alerts", "note", "1", "called\nthe owner"],
        ["alerts", "resolve", "1", "--reason", "paid\x1b[2J"],
        ["dunning", "pause", "--reason", "INC-42\nINC-43"],
        ["dunning", "exempt", CUSTOMER_ID, "--reason", "plan\x1b[2J", "--yes"],
        ["dunning", "unexempt", "cus_1\x00", "--yes"],
        ["quarantine", "dismiss", "1", "--reason", "x\x00", "--yes"],
        ["alerts", "list", "--customer", "cus_\x07"],
        ["dunning", "list", "--invoice", "in_1\x00"],
        ["retry", "in_1QpL8HLkdIwHu7ixl4OzzPMv\x00", "--dry-run"],
        ["sync", "--events-file", "events\n.json"],
    ]:
        refused(args, "control character")


def test_a_nul_in_an_imported_description_is_a_bad_row(hostile_seeded, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + f"{CUSTOMER_ID},booking_fee,1.00,usd,2026-11-21,,a\x00b,e-1\n")
    error = json_refusal(run("ledger", "import", str(path), "--json"))
    assert error["errors"] == [
        "line 2: description 'a\\x00b' contains a control character (U+0000, '\\x00') at position 1"
    ]


# --- ids longer than Stripe's 255 characters --------------------------------------


def test_ids_of_255_characters_are_accepted(store_env):
    entry = run(*ledger_add("--customer=cus_" + "c" * 251, "--external-id=" + "e" * 255), "--json")
    assert entry.exit_code == 0, entry.stdout + entry.stderr


def test_an_id_longer_than_255_characters_is_refused(hostile_seeded):
    for args in [
        ledger_add("--customer=cus_" + "a" * 252),
        ledger_add("--invoice=in_" + "a" * 253),
        ledger_add("--external-id=" + "e" * 256),
        ["retry", "--dry-run", "in_" + "a" * 253],
        ["portal", "--dry-run", "cus_" + "a" * 252],
        ["dunning", "exempt", "cus_" + "a" * 252, "--reason", "VIP", "--yes"],
        ["dunning", "list", "--invoice", "in_" + "a" * 253],
        ["alerts", "list", "--customer", "cus_" + "a" * 10_000],
    ]:
        refused(args, "characters")
    refused(["quarantine", "show", "evt_" + "a" * 252], "evt_")


# --- ids without their prefix -----------------------------------------------------


def test_an_id_without_its_prefix_is_refused(hostile_seeded):
    for args, needle in [
        (ledger_add("--customer=RkS5AtmBK5hCeq"), "cus_"),
        (ledger_add("--customer=cus_Rk S5"), "cus_"),
        (ledger_add("--invoice=inv_1QpL8HLkdIwHu7ixl4OzzPMv"), "in_"),
        (["alerts", "list", "--customer", "cust_1"], "cus_"),
        (["dunning", "list", "--invoice", "ii_1"], "in_"),
        (["reconcile", "--offline", "--customer", "sub_1QpL7wLkdIwHu7ixmD2ZbV4q"], "cus_"),
        (["portal", "--dry-run", "sub_1QpL7wLkdIwHu7ixmD2ZbV4q"], "cus_"),
        (["retry", "--dry-run", "in_"], "in_"),
        (["dunning", "preview", "ch_3QpL9"], "in_"),
        (["dunning", "exempt", "RkS5AtmBK5hCeq", "--reason", "VIP", "--yes"], "cus_"),
        (["dunning", "unexempt", "sub_1QpL7wLkdIwHu7ixmD2ZbV4q", "--yes"], "cus_"),
        (["quarantine", "show", "evt"], "evt_"),
    ]:
        refused(args, needle)


# --- invalid UTF-8 ------------------------------------------------------------------


def test_an_argument_that_is_not_utf8_is_refused(hostile_seeded):
    for args in [
        ledger_add("--description=caf\udce9"),
        ledger_add("--customer=cus_\udcff"),
        ["alerts", "note", "1", "caf\udce9"],
        ["dunning", "pause", "--reason", "\udcc3("],
        ["ledger", "import", "usage-\udcff.csv"],
    ]:
        refused(args, "not valid UTF-8")


def test_bytes_that_are_not_utf8_on_the_real_command_line_are_refused(hostile_seeded):
    """As a shell passes them: Python hands the bytes over as lone surrogates."""
    result = subprocess.run(
        [sys.executable, "-m", "cloudgreet_billing", "alerts", "note", "1", b"caf\xe9"],
        capture_output=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        timeout=60,
    )
    lines = result.stderr.decode("utf-8", "replace").splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "not valid UTF-8" in lines[0], lines


# --- an empty --occurred-at -------------------------------------------------------


def test_an_empty_occurred_at_is_refused_not_taken_as_now(hostile_seeded):
    for value in ["", "   "]:
        refused(ledger_add(f"--occurred-at={value}"), "--occurred-at", "empty")
    for args in [
        ["ledger", "list", "--since", ""],
        ["export-csv", "-o", "x.csv", "--until", ""],
        ["sync", "--since", ""],
    ]:
        refused(args, "empty")


# --- currencies that are not ISO 4217 ---------------------------------------------


def test_a_currency_that_is_not_iso_4217_is_refused(hostile_seeded):
    for currency in ["uds", "XXX", "abc", "eu", "€", "usdollar"]:
        refused(ledger_add(f"--currency={currency}"), "ISO 4217")


def test_an_imported_currency_that_is_not_iso_4217_is_a_bad_row(hostile_seeded, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + f"{CUSTOMER_ID},booking_fee,1.00,uds,2026-11-21,,,\n")
    error = json_refusal(run("ledger", "import", str(path), "--json"))
    assert error["errors"] == ["line 2: currency 'uds' is not an ISO 4217 currency code"]


def test_every_currency_stripe_settles_in_is_accepted():
    from cloudgreet_billing.domain.money import THREE_DECIMAL, ZERO_DECIMAL, parse_currency

    for code in [*ZERO_DECIMAL, *THREE_DECIMAL, "usd", "eur", "gbp", "cad", "aud", "chf"]:
        assert parse_currency(code.upper()) == code


# --- times before 2000 or far in the future ---------------------------------------


def test_a_time_outside_2000_to_2100_is_refused_in_every_command(hostile_seeded):
    for when in ["1999-12-31T23:59:59Z", "1900-01-01", "2100-01-01", "9999-12-31T23:59:59-01:00"]:
        refused(ledger_add(f"--occurred-at={when}"), "2000-01-01 to 2100-01-01")
    for args in [
        ["ledger", "list", "--since=1999-01-01"],
        ["export-csv", "-o", "x.csv", "--until=2200-01-01"],
        ["sync", "--since=1970-01-01T00:00:00Z"],
    ]:
        refused(args, "2000-01-01 to 2100-01-01")


@freeze_time("2026-11-24T12:00:00Z")
def test_a_ledger_entry_more_than_a_year_ahead_is_refused(hostile_seeded):
    refused(ledger_add("--occurred-at=2027-12-01"), "more than a year from now")


@freeze_time("2026-11-24T12:00:00Z")
def test_a_ledger_entry_less_than_a_year_ahead_is_recorded(store_env):
    assert run(*ledger_add("--occurred-at=2027-11-01"), "--json").exit_code == 0


@freeze_time("2026-11-24T12:00:00Z")
def test_an_imported_entry_more_than_a_year_ahead_is_a_bad_row(store_env, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(
        HEADER
        + f"{CUSTOMER_ID},booking_fee,1.00,usd,2026-11-21,,,\n"
        + f"{CUSTOMER_ID},booking_fee,1.00,usd,2036-11-21,,,\n"
    )
    error = json_refusal(run("ledger", "import", str(path), "--json"))
    assert error["errors"] == [
        "line 3: occurred_at 2036-11-21T00:00:00Z is more than a year from now"
    ]


# --- --since after --until --------------------------------------------------------


def test_since_after_until_is_refused_the_same_way_everywhere(hostile_seeded):
    for command in [["ledger", "list"], ["export-csv", "-o", "x.csv"], ["incident", "summary"]]:
        for since, until in [("2026-11-20", "2026-11-10"), ("2026-11-20", "2026-11-20T00:00Z")]:
            line = refused([*command, "--since", since, "--until", until])
            assert line == (
                f"error: --since {since}T00:00:00Z must be before --until {until[:10]}T00:00:00Z"
                " (swap them, or leave one out)"
            )
    assert not Path("x.csv").exists()


# --- CSV files that are no ledger -------------------------------------------------


def test_an_empty_csv_is_refused_with_no_rows(hostile_seeded, tmp_path):
    path = tmp_path / "usage.csv"
    for body in ["", "\n\n", HEADER, HEADER + "\n  \n"]:
        path.write_text(body)
        refused(["ledger", "import", str(path)], "usage.csv has no rows")
        refused(["ledger", "import", str(path), "--dry-run"], "no rows")
    refused(["ledger", "import", "-"], "stdin has no rows", input="")


def test_a_csv_with_another_separator_names_it(hostile_seeded, tmp_path):
    path = tmp_path / "usage.csv"
    for separator, name in [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")]:
        row = separator.join([CUSTOMER_ID, "booking_fee", "2,50", "eur", "2026-11-21"])
        for rows in ([row], [separator.join(HEADER.strip().split(",")), row]):
            path.write_text("\n".join(rows) + "\n")
            refused(["ledger", "import", str(path)], f"is separated by {name}", "not commas")


# --- PostgreSQL's own refusals are bad input too ----------------------------------


def test_a_value_postgresql_refuses_is_exit_2_and_one_line(postgres_url, monkeypatch, store_env):
    """The last line of defence: a DataError that slips past the checks is not
    "unexpected"."""
    import psycopg

    from cloudgreet_billing.services import alerts

    with psycopg.connect(postgres_url) as connection:
        try:
            connection.execute("SELECT 9223372036854775807::bigint + 1")
        except psycopg.DataError as exc:
            out_of_range = exc

    def refuse(*args: object, **kwargs: object) -> None:
        raise out_of_range

    monkeypatch.setattr(alerts, "show_alert", refuse)
    error = json_refusal(run("alerts", "show", "1", "--json"))
    assert error["code"] == "bad_input"
    assert error["message"] == "PostgreSQL refused a value: bigint out of range"
