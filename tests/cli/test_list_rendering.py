"""Every listing at 80 and 200 columns on a terminal, and through a pipe: ids and amounts
always whole.

The store is filled through the CLI itself (a Stripe events file and ``ledger add``), with
ids of real length. A terminal is Rich's ``Console(width=…)`` standing in for the real one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from freezegun import freeze_time
from rich.console import Console

from cloudgreet_billing.cli import output
from cloudgreet_billing.domain.money import format_money
from tests.cli.helpers import run
from tests.cli.seeded import INVOICES, NOW


def _terminal(monkeypatch: pytest.MonkeyPatch, width: int) -> io.StringIO:
    """Make the CLI draw for a terminal ``width`` columns wide; returns what it drew."""
    screen = io.StringIO()

    def console() -> Console:
        return Console(
            file=screen,
            width=width,
            force_terminal=True,
            color_system=None,
            soft_wrap=True,
            markup=False,
            highlight=False,
        )

    monkeypatch.setattr(output, "stdout_console", console)
    return screen


def _money(amount: int, currency: str) -> str:
    return format_money(amount, currency)


def _alerts(listed: Any) -> list[str]:
    return [
        value
        for alert in listed
        for value in (
            alert["invoice_id"],
            alert["customer_id"],
            _money(alert["amount_due"], alert["currency"]),
        )
    ]


def _steps(listed: Any) -> list[str]:
    return [value for step in listed for value in (step["invoice_id"], step["customer_id"])]


def _ledger(listed: Any) -> list[str]:
    return [
        value
        for entry in listed
        for value in (
            entry["customer_id"],
            entry["invoice_id"],
            _money(entry["amount"], entry["currency"]),
        )
    ]


def _quarantine(listed: Any) -> list[str]:
    return [row["event_id"] for row in listed]


def _reconcile(report: Any) -> list[str]:
    wanted = []
    for row in report["rows"]:
        wanted.append(row["customer_id"])
        for field in ("stripe_total", "ledger_total", "variance"):
            wanted.append(_money(row[field], row["currency"]))
    for alert in report["open_alerts"]:
        wanted += [alert["invoice_id"], _money(alert["amount_due"], alert["currency"])]
    return wanted


def _plan(summary: Any) -> list[str]:
    return [
        value
        for item in summary["planned"]
        for value in (item["invoice_id"], item["customer_id"], item["recipient"], item["template"])
    ]


LISTINGS = [
    pytest.param(["alerts", "list"], _alerts, id="alerts list"),
    pytest.param(["dunning", "list"], _steps, id="dunning list"),
    pytest.param(["ledger", "list"], _ledger, id="ledger list"),
    pytest.param(["quarantine", "list"], _quarantine, id="quarantine list"),
    pytest.param(["reconcile", "--offline"], _reconcile, id="reconcile"),
    pytest.param(["dunning", "run", "--dry-run"], _plan, id="dunning run --dry-run"),
]


def _expected(args: list[str], values: Callable[[Any], list[str]]) -> list[str]:
    with freeze_time(NOW):
        result = run(*args, "--json")
    assert result.exit_code in (0, 4), result.stderr
    wanted = values(json.loads(result.stdout)["data"])
    assert wanted and all(wanted), args
    return wanted


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize(("args", "values"), LISTINGS)
def test_a_terminal_shows_every_id_and_amount_whole(
    seeded: None,
    monkeypatch: pytest.MonkeyPatch,
    width: int,
    args: list[str],
    values: Callable[[Any], list[str]],
) -> None:
    wanted = _expected(args, values)
    screen = _terminal(monkeypatch, width)
    with freeze_time(NOW):
        result = run(*args)
    assert result.exit_code in (0, 4), result.stderr
    drawn = screen.getvalue()
    lines = drawn.splitlines()
    for value in wanted:
        assert any(value in line for line in lines), (value, drawn)
    # No line that carries an id or an amount is wider than the terminal: none wraps.
    for line in lines:
        if any(value in line for value in wanted):
            assert len(line) <= width, (line, width)
    assert "…" not in drawn


@pytest.mark.parametrize(("args", "values"), LISTINGS)
def test_a_pipe_gets_tab_separated_rows_with_whole_values(
    seeded: None, args: list[str], values: Callable[[Any], list[str]]
) -> None:
    wanted = _expected(args, values)
    with freeze_time(NOW):
        result = run(*args)
    assert result.exit_code in (0, 4), result.stderr
    cells = {cell for line in result.stdout.splitlines() for cell in line.split("\t")}
    for value in wanted:
        assert value in cells, (value, result.stdout)
    assert not any(mark in result.stdout for mark in ("│", "┃", "━", "─", "…"))


def test_alerts_list_at_80_columns_is_one_block_per_alert(
    seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two 27-character ids, a type and an amount need more than 80 columns: each alert
    becomes a block of ``key: value`` pairs rather than a table with cut cells."""
    screen = _terminal(monkeypatch, 80)
    with freeze_time(NOW):
        assert run("alerts", "list").exit_code == 0
    blocks = screen.getvalue().strip("\n").split("\n\n")
    assert len(blocks) == len(INVOICES)
    assert blocks[0].splitlines() == [
        "id: 3  type: invoice_failed  status: open  customer: cus_Ts4bN8qZ3wE7rY1uI5oP2aS",
        "invoice: in_1QpN5sLkdIwHu7ixZ0pWcK7h  amount: $9.90",
        "opened: 2026-05-28 22:26 UTC",
    ]
    pairs = [pair for line in blocks[0].splitlines() for pair in line.split("  ")]
    first = dict(pair.split(": ", 1) for pair in pairs)
    assert first == {
        "id": "3",
        "type": "invoice_failed",
        "status": "open",
        "customer": "cus_Ts4bN8qZ3wE7rY1uI5oP2aS",
        "invoice": "in_1QpN5sLkdIwHu7ixZ0pWcK7h",
        "amount": "$9.90",
        "opened": "2026-05-28 22:26 UTC",
    }


def test_alerts_list_at_200_columns_is_one_line_per_alert(
    seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = _terminal(monkeypatch, 200)
    with freeze_time(NOW):
        assert run("alerts", "list").exit_code == 0
    header, rule, *rows = screen.getvalue().splitlines()
    # No alert has a note: the notes column, empty, is left out.
    assert header.split() == ["id", "type", "status", "customer", "invoice", "amount", "opened"]
    assert set(rule) == {"─"}
    assert [row.split()[3:6] for row in rows] == [
        [customer, invoice, _money(amount, "usd")]
        for invoice, (customer, amount) in reversed(INVOICES.items())
    ]
    # Money is right-aligned: every amount ends where the header's "amount" ends.
    end = header.index("amount") + len("amount")
    for row in rows:
        assert row[:end].endswith(row.split()[5])
