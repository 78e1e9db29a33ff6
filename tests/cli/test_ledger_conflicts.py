"""A reused external_id through the CLI: exit 2, one line naming the line and both
versions, nothing written; an identical repeat is skipped. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tests.cli.helpers import data, error, run

HEADER = "customer_id,kind,amount,currency,occurred_at,invoice_id,description,external_id\n"
INVOICE = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
ADD = (
    "ledger",
    "add",
    "--customer",
    "cus_QTestAcme01",
    "--kind",
    "booking_fee",
    "--currency",
    "usd",
    "--occurred-at",
    "2026-11-20T10:00:00Z",
    "--invoice",
    INVOICE,
    "--external-id",
    "bk-1001",
)


def ledger_rows() -> list[dict]:
    return data(run("ledger", "list", "--json", "--limit", "1000"))


def write_csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bookings.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def row(external_id: str, amount: str = "2.50", customer: str = "cus_QTestAcme01") -> str:
    return f"{customer},booking_fee,{amount},usd,2026-11-20T10:00:00Z,{INVOICE},,{external_id}\n"


def test_add_repeating_an_entry_is_a_no_op(store_env):
    first = data(run(*ADD, "--amount", "2.50", "--json"))
    again = run(*ADD, "--amount", "2.50", "--description", "reworded")
    assert again.exit_code == 0
    assert f"already recorded (same --external-id): entry {first['id']}" in again.stdout
    assert len(ledger_rows()) == 1


def test_add_reusing_an_external_id_with_another_amount_is_refused(store_env):
    first = data(run(*ADD, "--amount", "2.50", "--json"))
    result = run(*ADD, "--amount", "25.00")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: external_id bk-1001 already names entry {first['id']}, with other values: "
        f"amount 2.50 usd (entry {first['id']}) vs 25.00 usd (given) (an external_id names "
        "one entry: repeat it only with the identical entry, or give a different entry its "
        "own external_id)"
    )
    assert "Traceback" not in result.output
    as_json = error(run(*ADD, "--amount", "2.50", "--currency", "eur", "--json"))
    assert as_json["code"] == "external_id_conflict"
    assert as_json["conflicts"][0]["recorded"]["entry_id"] == first["id"]
    assert (as_json["conflicts"][0]["given"]["currency"], "line" in as_json["conflicts"][0]) == (
        "eur",
        False,
    )
    assert "amount 2.50 usd (entry" in as_json["message"]
    assert "vs 2.50 eur (given)" in as_json["message"]
    assert [r["amount"] for r in ledger_rows()] == [250]


def test_import_reusing_a_recorded_external_id_names_the_line_and_writes_nothing(
    store_env, tmp_path
):
    first = data(run(*ADD, "--amount", "2.50", "--json"))
    path = write_csv(tmp_path, row("bk-1002") + "\n" + row("bk-1001", customer="cus_QTestBeta002"))
    for extra in ((), ("--dry-run",)):
        result = run("ledger", "import", str(path), *extra)
        assert result.exit_code == 2
        outcome = "nothing would be imported" if extra else "nothing was imported"
        assert result.stderr.splitlines()[-1].startswith(
            f"error: bookings.csv line 4: external_id bk-1001 already names entry "
            f"{first['id']}, with other values: customer cus_QTestAcme01 (entry {first['id']}) "
            f"vs cus_QTestBeta002 (line 4); {outcome} ("
        )
    assert [r["external_id"] for r in ledger_rows()] == ["bk-1001"]


def test_import_reusing_its_own_external_id_names_both_lines(store_env, tmp_path):
    # Line 3's quoted description spans two lines, so the repeat is on line 6.
    path = write_csv(
        tmp_path,
        row("bk-2001")
        + 'cus_QTestAcme01,booking_fee,1.00,usd,2026-11-21,,"two\nlines",bk-2002\n'
        + row("bk-2003")
        + row("bk-2001", amount="3.00"),
    )
    result = run("ledger", "import", str(path), "--json")
    assert result.exit_code == 2
    body = error(result)
    assert body["code"] == "external_id_conflict"
    assert body["message"] == (
        "bookings.csv line 6: external_id bk-2001 is also on line 2, with other values: "
        "amount 2.50 usd (line 2) vs 3.00 usd (line 6); nothing was imported"
    )
    facts = {
        "customer_id": "cus_QTestAcme01",
        "kind": "booking_fee",
        "currency": "usd",
        "occurred_at": "2026-11-20T10:00:00Z",
        "invoice_id": INVOICE,
    }
    assert body["conflicts"] == [
        {
            "external_id": "bk-2001",
            "line": 6,
            "recorded": {"line": 2, **facts, "amount": 250},
            "given": {**facts, "amount": 300},
        }
    ]
    assert body["conflict_count"] == 1
    assert ledger_rows() == []


def test_several_conflicts_are_counted_and_listed(store_env, tmp_path):
    path = write_csv(
        tmp_path, row("a") + row("b") + row("a", amount="1.00") + row("b", amount="1.00")
    )
    result = run("ledger", "import", str(path))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[-3].startswith(
        "error: bookings.csv: 2 rows reuse an external_id with other values; nothing was imported ("
    )
    assert lines[-2:] == [
        "  line 4: external_id a is also on line 2, with other values: "
        "amount 2.50 usd (line 2) vs 1.00 usd (line 4)",
        "  line 5: external_id b is also on line 3, with other values: "
        "amount 2.50 usd (line 3) vs 1.00 usd (line 5)",
    ]
    assert ledger_rows() == []


def test_a_dry_run_says_what_the_import_would_do(store_env, tmp_path):
    run(*ADD, "--amount", "2.50", "--json")
    path = write_csv(tmp_path, row("bk-1001") + row("bk-3001") + row("bk-3001"))
    report = data(run("ledger", "import", str(path), "--dry-run", "--json"))
    assert report == {
        "source": "bookings.csv",
        "rows": 3,
        "inserted": 0,
        "duplicates": 2,
        "dry_run": True,
        "would_insert": 1,
    }
    human = run("ledger", "import", str(path), "--dry-run")
    assert human.stdout.strip() == (
        "bookings.csv: 3 rows are valid; 1 would be imported, 2 already in the ledger; "
        "nothing written"
    )
    assert len(ledger_rows()) == 1
