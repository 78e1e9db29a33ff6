"""``ledger add | import | list`` through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import data, error, run

HEADER = "customer_id,kind,amount,currency,occurred_at,invoice_id,description,external_id\n"


def ledger_rows() -> list[dict]:
    return data(run("ledger", "list", "--json", "--limit", "1000"))


def write_csv(tmp_path: Path, body: str, name: str = "usage.csv") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_add_records_minor_units_and_prints_the_entry(store_env):
    result = run(
        "ledger",
        "add",
        "--customer",
        "cus_A",
        "--kind",
        "booking_fee",
        "--amount",
        "12.34",
        "--occurred-at",
        "2026-11-20T10:00:00+02:00",
        "--invoice",
        "in_9",
        "--description",
        "3 bookings",
        "--external-id",
        "ext-1",
        "--json",
    )
    entry = data(result)
    assert entry["amount"] == 1234
    assert entry["currency"] == "usd"
    assert entry["occurred_at"] == "2026-11-20T08:00:00Z"
    assert (entry["invoice_id"], entry["description"], entry["external_id"]) == (
        "in_9",
        "3 bookings",
        "ext-1",
    )
    assert entry["created"] is True
    assert ledger_rows()[0]["id"] == entry["id"]


def test_add_in_human_mode_formats_money_and_names_the_store(store_env):
    result = run(
        "ledger",
        "add",
        "--customer",
        "cus_A",
        "--kind",
        "subscription",
        "--amount",
        "1299",
        "--currency",
        "usd",
    )
    assert result.exit_code == 0
    assert "$1,299.00" in result.stdout
    backend = "postgres" if store_env.startswith("postgres") else "sqlite"
    assert f"store: {backend}" in result.stderr


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [("jpy", "500", 500), ("usd", "0.5", 50), ("kwd", "1.234", 1234), ("EUR", "-0", 0)],
)
def test_amounts_respect_the_currency_minor_unit(store_env, currency, amount, minor):
    entry = data(
        run(
            "ledger",
            "add",
            "--customer",
            "cus_A",
            "--kind",
            "booking_fee",
            "--amount",
            amount,
            "--currency",
            currency,
            "--json",
        )
    )
    assert entry["amount"] == minor
    assert entry["currency"] == currency.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "12.345"], "more precision than USD allows"),
        (["--amount", "5.5", "--currency", "jpy"], "more precision than JPY allows"),
        (["--amount", "1e3"], "is not a number"),
        (["--amount", "12,34"], "is not a number"),
        (["--amount", "NaN"], "is not a number"),
        (["--amount", "-5"], "only credit_adjustment"),
        (["--amount", "1", "--currency", "dollars"], "not a 3-letter ISO code"),
        (["--amount", "1", "--kind", "refund"], "kind 'refund'"),
        (["--amount", "1", "--customer", "acme"], "not a Stripe customer id"),
        (["--amount", "1", "--invoice", "inv-1"], "not a Stripe invoice id"),
        (["--amount", "1", "--occurred-at", "yesterday"], "not an ISO 8601"),
        (["--amount", "99999999999999999999"], "too large"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(store_env, args, message):
    base = {"--customer": "cus_A", "--kind": "booking_fee"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [part for pair in base.items() for part in pair]
    result = run("ledger", "add", *flat)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 + result.stderr.count("store:")
    assert "Traceback" not in result.stderr
    assert ledger_rows() == []


def test_bad_input_in_json_mode_is_an_error_object(store_env):
    result = run(
        "ledger", "add", "--customer", "cus_A", "--kind", "booking_fee", "--amount", "abc", "--json"
    )
    assert result.exit_code == 2
    assert error(result)["code"] == "bad_input"
    assert "abc" in error(result)["message"]


def test_negative_credit_adjustment_is_allowed(store_env):
    entry = data(
        run(
            "ledger",
            "add",
            "--customer",
            "cus_A",
            "--kind",
            "credit_adjustment",
            "--amount",
            "-10.00",
            "--json",
        )
    )
    assert entry["amount"] == -1000


def test_import_is_idempotent_through_external_id(store_env, tmp_path):
    path = write_csv(
        tmp_path,
        HEADER
        + 'cus_A,booking_fee,2.50,usd,2026-11-20,in_1,"Cleaning, 3 visits",b-1\n'
        + "cus_B,subscription,99,eur,2026-11-21T09:00:00Z,,,s-1\n"
        + "cus_A,credit_adjustment,-1.25,usd,2026-11-22,,goodwill,c-1\n",
    )
    first = data(run("ledger", "import", str(path), "--json"))
    assert (first["rows"], first["inserted"], first["duplicates"]) == (3, 3, 0)
    again = data(run("ledger", "import", str(path), "--json"))
    assert (again["rows"], again["inserted"], again["duplicates"]) == (3, 0, 3)
    rows = ledger_rows()
    assert sorted((r["customer_id"], r["amount"], r["currency"]) for r in rows) == [
        ("cus_A", -125, "usd"),
        ("cus_A", 250, "usd"),
        ("cus_B", 9900, "eur"),
    ]
    assert {r["description"] for r in rows} == {"Cleaning, 3 visits", None, "goodwill"}


def test_import_reports_every_bad_row_by_line_and_writes_nothing(store_env, tmp_path):
    path = write_csv(
        tmp_path,
        HEADER
        + "cus_A,booking_fee,2.50,usd,2026-11-20,,,ok-1\n"
        + "cus_A,booking_fee,2.505,usd,2026-11-20,,,bad-precision\n"
        + "cus_A,booking_fee,2.50,usd\n"
        + "cus_A,refund,2.50,usd,2026-11-20,,,bad-kind\n"
        + "cus_A,booking_fee,2.50,usd,2026-11-20,,,ok-2\n"
        + "cus_A,booking_fee,2.50,usd,20/11/2026,,,bad-date\n",
    )
    result = run("ledger", "import", str(path))
    assert result.exit_code == 2
    assert "4 bad rows; nothing was imported" in result.stderr
    for line in ("line 3:", "line 4:", "line 5:", "line 7:"):
        assert line in result.stderr
    assert "line 2:" not in result.stderr and "line 6:" not in result.stderr
    assert ledger_rows() == []

    as_json = error(run("ledger", "import", str(path), "--json"))
    assert [e.split(":")[0] for e in as_json["errors"]] == ["line 3", "line 4", "line 5", "line 7"]


def test_import_without_header_uses_the_contract_column_order(store_env, tmp_path):
    path = write_csv(tmp_path, "cus_A,booking_fee,1,usd,2026-11-20\n")
    assert data(run("ledger", "import", str(path), "--json"))["inserted"] == 1


def test_import_header_may_reorder_and_omit_optional_columns(store_env, tmp_path):
    path = write_csv(
        tmp_path,
        "amount,currency,kind,occurred_at,customer_id\n1,usd,booking_fee,2026-11-20,cus_Z\n",
    )
    assert data(run("ledger", "import", str(path), "--json"))["inserted"] == 1
    assert ledger_rows()[0]["customer_id"] == "cus_Z"


def test_import_rejects_a_header_with_unknown_columns(store_env, tmp_path):
    path = write_csv(tmp_path, "customer_id,kind,amount,currency,occurred_at,colour\n")
    result = run("ledger", "import", str(path))
    assert result.exit_code == 2
    assert "unknown colour" in result.stderr


def test_import_dry_run_checks_rows_and_writes_nothing(store_env, tmp_path):
    path = write_csv(tmp_path, HEADER + "cus_A,booking_fee,1,usd,2026-11-20,,,x\n")
    report = data(run("ledger", "import", str(path), "--dry-run", "--json"))
    assert (report["rows"], report["dry_run"]) == (1, True)
    assert ledger_rows() == []


def test_import_reads_stdin(store_env):
    result = run(
        "ledger", "import", "-", "--json", input=HEADER + "cus_A,booking_fee,1,usd,2026-11-20,,,s\n"
    )
    assert data(result)["inserted"] == 1


def test_import_of_a_missing_or_non_utf8_file_is_bad_input(store_env, tmp_path):
    assert run("ledger", "import", str(tmp_path / "nope.csv")).exit_code == 2
    binary = tmp_path / "latin1.csv"
    binary.write_bytes(
        HEADER.encode() + "cus_A,booking_fee,1,usd,2026-11-20,,caf\xe9,x\n".encode("latin-1")
    )
    result = run("ledger", "import", str(binary))
    assert result.exit_code == 2
    assert "not UTF-8" in result.stderr
    assert ledger_rows() == []


def test_import_accepts_an_excel_bom(store_env, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"\xef\xbb\xbf" + (HEADER + "cus_A,booking_fee,1,usd,2026-11-20,,,bom\n").encode()
    )
    assert data(run("ledger", "import", str(path), "--json"))["inserted"] == 1


def test_list_filters(store_env):
    for customer, kind, day in [
        ("cus_A", "booking_fee", "01"),
        ("cus_B", "booking_fee", "02"),
        ("cus_A", "subscription", "03"),
    ]:
        run(
            "ledger",
            "add",
            "--customer",
            customer,
            "--kind",
            kind,
            "--amount",
            "1",
            "--occurred-at",
            f"2026-11-{day}",
        )
    listed = data(run("ledger", "list", "--customer", "cus_A", "--json"))
    assert [r["kind"] for r in listed] == ["subscription", "booking_fee"]
    listed = data(run("ledger", "list", "--since", "2026-11-02", "--until", "2026-11-03", "--json"))
    assert [r["customer_id"] for r in listed] == ["cus_B"]
    assert run("ledger", "list", "--since", "soon").exit_code == 2


def test_list_in_human_mode_shows_a_table(store_env):
    run(
        "ledger",
        "add",
        "--customer",
        "cus_A",
        "--kind",
        "booking_fee",
        "--amount",
        "500",
        "--currency",
        "jpy",
    )
    result = run("ledger", "list")
    assert result.exit_code == 0
    assert "¥500" in result.stdout and "cus_A" in result.stdout


def test_list_escapes_markup_in_descriptions(store_env, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run(
        "ledger",
        "add",
        "--customer",
        "cus_A",
        "--kind",
        "booking_fee",
        "--amount",
        "1",
        "--description",
        "[bold red]pwned[/]",
    )
    assert "[bold red]pwned[/]" in run("ledger", "list").stdout


def test_import_of_a_file_lets_a_large_load_take_the_bulk_path(tmp_path, monkeypatch):
    # A large import is only fast if the store hears how large it is; the size comes from
    # the file. Spy on the (SQLite) store to see the estimate it was given.
    from cloudgreet_billing.adapters.store.sqlite import BULK_LOAD_MIN_ROWS, SqliteStore
    from cloudgreet_billing.services.ledger import BYTES_PER_ROW_ESTIMATE

    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path}/bulk.db")
    seen: list[int | None] = []
    real = SqliteStore.import_ledger

    def spy(self, drafts, now, *, expected_rows=None, dry_run=False):
        seen.append(expected_rows)
        return real(self, drafts, now, expected_rows=expected_rows, dry_run=dry_run)

    monkeypatch.setattr(SqliteStore, "import_ledger", spy)
    rows = BULK_LOAD_MIN_ROWS + 100
    body = HEADER + "".join(
        f"cus_{i % 50},booking_fee,{i % 90}.50,usd,2026-11-{1 + i % 28:02d},in_{i % 7},"
        f"weekly cleaning visits,row-{i:08d}\n"
        for i in range(rows)
    )
    path = write_csv(tmp_path, body)
    result = data(run("ledger", "import", str(path), "--json"))
    assert result["inserted"] == rows
    assert seen == [path.stat().st_size // BYTES_PER_ROW_ESTIMATE]
    assert seen[0] >= BULK_LOAD_MIN_ROWS
