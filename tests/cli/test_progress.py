"""Progress bars go to stderr for people, and never to JSON consumers or cron."""

from __future__ import annotations

import io
import re
import sys

from cloudgreet_billing.cli.output import set_json_mode
from cloudgreet_billing.cli.progress import progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_drawn_on_a_terminal_stderr(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("FORCE_COLOR", "1")
    set_json_mode(False)
    stdout_before = sys.stdout
    with progress_bar("importing rows", total=100) as advance:
        assert advance is not None
        advance(60)
    assert "importing rows" in terminal.getvalue()
    assert sys.stdout is stdout_before


def test_no_bar_without_a_terminal_in_json_mode_or_below_the_minimum(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    set_json_mode(False)
    with progress_bar("rows") as advance:
        assert advance is None
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    set_json_mode(True)
    with progress_bar("rows") as advance:
        assert advance is None
    set_json_mode(False)
    with progress_bar("rows", total=10, minimum=200) as advance:
        assert advance is None


def test_ledger_import_shows_the_percentage_of_the_file_and_the_time_left(tmp_path):
    from tests.cli.terminal import run_on_a_terminal

    csv_file = tmp_path / "usage-2026-11.csv"
    with csv_file.open("w") as out:
        out.write(
            "customer_id,kind,amount,currency,occurred_at,invoice_id,description,external_id\n"
        )
        for n in range(40_000):
            out.write(
                f"cus_QpL8HLkdIwHu{n % 97:02d},booking_fee,4.50,usd,"
                f"2026-11-{1 + n % 28:02d}T09:00:00Z,"
                f"in_1QpL8HLkdIwHu7ixl4Oz{n % 9999:04d},booking #{n},fee-{n}\n"
            )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "BILLING_DATABASE_URL": f"sqlite:///{tmp_path}/billing.db"}  # fmt: skip
    assert run_on_a_terminal("db", "migrate", env=env, cwd=tmp_path).returncode == 0

    shown = run_on_a_terminal("ledger", "import", str(csv_file), env=env, cwd=tmp_path)

    assert shown.returncode == 0, shown.terminal
    assert "40,000 rows, 40,000 imported" in shown.stdout
    bars = [line for line in shown.terminal.splitlines() if "importing usage-2026-11.csv" in line]
    assert bars, shown.terminal
    assert any(re.search(r"\b100%.*40,000 rows.*ETA", line) for line in bars), bars
    assert all(len(line.rstrip()) <= 80 for line in bars)


def test_without_a_terminal_ledger_import_draws_nothing(tmp_path):
    import subprocess

    from tests.cli.terminal import SCRIPT

    csv_file = tmp_path / "usage.csv"
    csv_file.write_text(
        "customer_id,kind,amount,currency,occurred_at\n"
        "cus_QpL8HLkdIwHu7i,booking_fee,4.50,usd,2026-11-20T09:00:00Z\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "BILLING_DATABASE_URL": f"sqlite:///{tmp_path}/billing.db"}  # fmt: skip
    subprocess.run([str(SCRIPT), "db", "migrate"], env=env, check=True, capture_output=True)
    result = subprocess.run(
        [str(SCRIPT), "ledger", "import", str(csv_file)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "%" not in result.stderr
    assert result.stderr == f"store: sqlite {tmp_path}/billing.db\n"


def test_export_csv_to_a_file_shows_the_share_of_its_rows_written(tmp_path):
    import subprocess

    from tests.cli.terminal import SCRIPT, run_on_a_terminal

    csv_file = tmp_path / "usage.csv"
    with csv_file.open("w") as out:
        out.write("customer_id,kind,amount,currency,occurred_at,external_id\n")
        for n in range(5_000):
            out.write(f"cus_QpL8HLkdIwHu7i,booking_fee,4.50,usd,2026-11-2{n % 3}T09:00:00Z,f-{n}\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "BILLING_DATABASE_URL": f"sqlite:///{tmp_path}/billing.db"}  # fmt: skip
    for args in (["db", "migrate"], ["ledger", "import", str(csv_file)]):
        subprocess.run([str(SCRIPT), *args], env=env, check=True, capture_output=True)

    shown = run_on_a_terminal(
        "export-csv",
        "--since",
        "2026-11-01",
        "-o",
        str(tmp_path / "nov.csv"),
        env=env,
        cwd=tmp_path,
    )

    assert shown.returncode == 0, shown.terminal
    assert "wrote 5,000 ledger rows" in shown.stdout
    bars = [line for line in shown.terminal.splitlines() if line.startswith("exporting ledger")]
    assert any(re.search(r"100% 5,000 of 5,000 rows ETA", line) for line in bars), bars
    assert (tmp_path / "nov.csv").read_text().count("\n") == 5_001

    # One terminal for both streams: the bar is gone before the summary is printed.
    both = run_on_a_terminal(
        "export-csv", "--days", "30", "-o", str(tmp_path / "again.csv"), env=env, cwd=tmp_path,
        stdout_too=True,
    )  # fmt: skip
    assert both.returncode == 0, both.terminal
    assert re.search(r"^wrote 5,000 ledger rows", both.terminal, re.MULTILINE), both.terminal
