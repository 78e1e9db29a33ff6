"""The same filters on every listing, a word when ``--limit`` left rows out, and
``alerts show`` by invoice id."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import pytest
from freezegun import freeze_time

from cloudgreet_billing.bootstrap import open_store
from cloudgreet_billing.cli.table import left_out
from cloudgreet_billing.config import load_settings
from cloudgreet_billing.domain.alerts import AlertDraft
from tests.cli.helpers import data, run
from tests.cli.seeded import INVOICES, NOW

FIRST, SECOND, THIRD = INVOICES
CUSTOMER = INVOICES[SECOND][0]


def test_alerts_list_filters_by_customer_invoice_and_time(seeded: None) -> None:
    by_customer = data(run("alerts", "list", "--customer", CUSTOMER, "--json"))
    assert [alert["invoice_id"] for alert in by_customer] == [SECOND]
    by_invoice = data(run("alerts", "list", "--invoice", THIRD, "--json"))
    assert [alert["customer_id"] for alert in by_invoice] == [INVOICES[THIRD][0]]
    opened = "2026-05-28T22:26:40Z"  # when sync opened them (NOW)
    assert len(data(run("alerts", "list", "--since", opened, "--json"))) == 3
    assert data(run("alerts", "list", "--until", opened, "--json")) == []


def test_dunning_list_filters_by_customer_and_due_time(seeded: None) -> None:
    steps = data(run("dunning", "list", "--customer", CUSTOMER, "--json"))
    assert {(step["invoice_id"], step["day"]) for step in steps} == {
        (SECOND, 0),
        (SECOND, 1),
        (SECOND, 3),
    }
    # Day 0 is due at the first failure; the later days fall after the 29th.
    early = data(run("dunning", "list", "--until", "2026-05-29T12:00:00Z", "--json"))
    assert {step["day"] for step in early} == {0}
    late = data(run("dunning", "list", "--since", "2026-05-29T12:00:00Z", "--json"))
    assert {step["day"] for step in late} == {1, 3} and len(late) == 6


@pytest.mark.parametrize("listing", [["alerts", "list"], ["dunning", "list"], ["ledger", "list"]])
def test_an_empty_window_is_refused_in_one_line(seeded: None, listing: list[str]) -> None:
    result = run(*listing, "--since", "2026-05-29", "--until", "2026-05-28")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: --since 2026-05-29 is not before --until 2026-05-28 "
        "(--since is inclusive and --until exclusive: give an earlier --since)\n"
    )


@pytest.mark.parametrize(
    ("listing", "total"),
    [
        (["alerts", "list"], 3),
        (["dunning", "list"], 9),
        (["ledger", "list"], 3),
        (["quarantine", "list", "--status", "all"], 1),
    ],
)
def test_a_listing_cut_by_limit_says_how_many_it_left_out(
    seeded: None, listing: list[str], total: int
) -> None:
    with freeze_time(NOW):
        cut = run(*listing, "--limit", "1")
        whole = run(*listing, "--limit", str(total))
    assert cut.exit_code == 0
    assert len(cut.stdout.splitlines()) == 2  # the header and one row
    if total > 1:
        assert f"showing 1 of {total} (--limit)\n" in cut.stderr
    else:
        assert "showing" not in cut.stderr
    assert "showing" not in whole.stderr
    assert len(whole.stdout.splitlines()) == total + 1


def test_the_notice_counts_with_thousands_separators() -> None:
    caught = io.StringIO()
    with redirect_stderr(caught):
        left_out(50, 1234)
        left_out(50, 50)
    assert caught.getvalue() == "showing 50 of 1,234 (--limit)\n"


def test_alerts_show_takes_an_invoice_id_and_shows_its_newest_alert(seeded: None) -> None:
    shown = data(run("alerts", "show", SECOND, "--json"))
    assert (shown["invoice_id"], shown["type"]) == (SECOND, "invoice_failed")
    assert shown == data(run("alerts", "show", str(shown["id"]), "--json"))
    human = run("alerts", "show", SECOND)
    assert human.exit_code == 0 and human.stdout.startswith(f"alert {shown['id']}: ")
    assert "has " not in human.stderr  # one alert: nothing to say


def test_alerts_show_of_an_invoice_with_several_alerts_says_so(seeded: None) -> None:
    assert (
        run("alerts", "resolve", "1", "--reason", "paid by bank transfer", "--yes").exit_code == 0
    )
    store = open_store(load_settings())
    try:
        store.raise_alert(
            AlertDraft(
                type="payment_action_required",
                dedupe_key=f"payment_action_required:{FIRST}",
                customer_id=INVOICES[FIRST][0],
                invoice_id=FIRST,
            ),
            actor="tester",
            now=NOW.replace(hour=23),
        )
    finally:
        store.close()
    result = run("alerts", "show", FIRST)
    assert result.exit_code == 0
    assert result.stdout.startswith("alert 4: payment_action_required, open")
    assert (
        f"{FIRST} has 2 alerts; showing the newest, 4 "
        f"(all of them: alerts list --invoice {FIRST} --status all)\n"
    ) in result.stderr


def test_alerts_show_of_an_invoice_with_no_alert_exits_2(seeded: None) -> None:
    result = run("alerts", "show", "in_1QpZ0zLkdIwHu7ixN0A1ert0")
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "error: no alert for invoice in_1QpZ0zLkdIwHu7ixN0A1ert0 "
        "(see: cloudgreet-billing alerts list --status all)\n"
    )
