"""``dashboard`` through the CLI on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudgreet_billing.domain.alerts import AlertDraft
from cloudgreet_billing.domain.dunning import PAUSE_SETTING, StepDraft
from cloudgreet_billing.domain.ledger import make_draft
from cloudgreet_billing.domain.mirror import parse_invoice, parse_subscription
from tests.cli.helpers import data, run
from tests.finance.factories import NOW, coupon, discount, invoice, item, price, subscription

pytestmark = pytest.mark.usefixtures("frozen")


def fee(store, customer, amount, kind="booking_fee", currency="usd", days_ago=1.0):
    store.record_ledger_entry(
        make_draft(
            customer_id=customer,
            kind=kind,
            amount=amount,
            currency=currency,
            occurred_at=NOW - timedelta(days=days_ago),
        ),
        NOW,
    )


def alert(store, kind, invoice_id):
    return store.raise_alert(
        AlertDraft(
            type=kind,
            dedupe_key=f"{kind}:{invoice_id}",
            customer_id="cus_A",
            invoice_id=invoice_id,
            amount_due=100,
            currency="usd",
        ),
        actor="tester@ci",
        now=NOW,
    ).alert


def step(invoice_id, day, due_at):
    return StepDraft(
        invoice_id=invoice_id,
        customer_id="cus_A",
        alert_id=None,
        day=day,
        channel="email",
        template=f"day{day}_email",
        due_at=due_at,
    )


def seed(store):
    for raw in (
        subscription("sub_1", [item(price(120_000, interval="year"))]),  # 10,000
        subscription(
            "sub_2",
            [item(price(2_000), quantity=3)],
            status="past_due",
            discounts=[discount(coupon(percent_off=50))],
        ),  # 3,000
        subscription("sub_3", [item(price(9_900))], status="trialing"),  # not counted
        subscription("sub_4", [item(price(1_000, currency="eur"))], currency="eur"),
    ):
        store.upsert_subscription(parse_subscription(raw), NOW, NOW)
    fee(store, "cus_A", "2.50")
    fee(store, "cus_B", "1.25", currency="eur")
    fee(store, "cus_A", "7.00", days_ago=31)  # outside the 30 days
    fee(store, "cus_A", "-4.00", kind="credit_adjustment")
    fee(store, "cus_A", "99.00", kind="subscription")
    store.upsert_invoice(
        parse_invoice(
            invoice("in_due", "cus_A", total=800, status="open", due_date=NOW - timedelta(days=1))
        ),
        NOW,
        NOW,
    )
    store.upsert_invoice(
        parse_invoice(
            invoice("in_eur", "cus_B", total=600, status="open", currency="eur", attempt_count=2)
        ),
        NOW,
        NOW,
    )
    alert(store, "invoice_failed", "in_1")
    alert(store, "invoice_failed", "in_2")
    resolved = alert(store, "payment_action_required", "in_3")
    store.resolve_alert(resolved.id, resolution="paid", actor="tester@ci", now=NOW)
    alert(store, "dunning_exhausted", "in_4")
    store.schedule_steps(
        [
            step("in_due", 0, NOW - timedelta(hours=3)),  # overdue: due today
            step("in_due", 1, NOW + timedelta(hours=11)),  # later today
            step("in_due", 3, NOW + timedelta(hours=13)),  # tomorrow
            step("in_old", 0, NOW - timedelta(days=2)),  # claimed, then its lease expires
        ],
        NOW,
    )
    claimed = store.claim_due_steps(
        now=NOW - timedelta(days=1), lease_until=NOW - timedelta(hours=20), run_id="r1", limit=1
    )
    assert len(claimed) == 1
    store.expire_leases(NOW)


def test_dashboard_figures(store):
    seed(store)
    store.put_setting("sync.last_synced_at", "2026-11-24T09:00:00Z", "cron", NOW)
    board = data(run("dashboard", "--json"))
    assert board == {
        "generated_at": "2026-11-24T12:00:00Z",
        "mrr": {"eur": 1000, "usd": 13000},
        "mrr_subscriptions": 3,
        "booking_fees_30d": {"eur": 125, "usd": 250},
        "credit_adjustments_30d": {"usd": -400},
        "open_alerts": {"dunning_exhausted": 1, "invoice_failed": 2},
        "past_due": {"count": 2, "amounts": {"eur": 600, "usd": 800}},
        "dunning_due": 2,
        "dunning_needs_review": 1,
        # in_due is in dunning, and neither it nor a mirrored customer names a contact.
        "dunning_unreachable": 1,
        "paused": False,
        "pause_reason": None,
        "paused_by": None,
        "paused_at": None,
        "last_sync_at": "2026-11-24T09:00:00Z",
        "last_sync_age_seconds": 3 * 3600,
        "quarantined_events": 0,
        "warnings": [
            "1 unpaid invoice in dunning cannot be reached: no contact on any of their "
            "channels (alerts list --type dunning_undeliverable)"
        ],
        "mrr_notes": [],
        # No payment failed here as an event reports it (test_recovery.py has those).
        "recovery_30d": {},
    }


def test_pause_and_a_stale_sync_are_warned(store):
    store.put_setting(
        PAUSE_SETTING,
        {
            "paused": True,
            "reason": "Stripe outage",
            "actor": "ops@ci",
            "at": "2026-11-24T08:00:00Z",
        },
        "ops@ci",
        NOW,
    )
    store.put_setting("sync.last_synced_at", "2026-11-22T06:00:00Z", "cron", NOW)
    board = data(run("dashboard", "--json"))
    assert (board["paused"], board["pause_reason"], board["paused_by"]) == (
        True,
        "Stripe outage",
        "ops@ci",
    )
    assert board["last_sync_age_seconds"] == 2 * 86400 + 6 * 3600
    assert board["warnings"] == [
        "last sync was 2 days ago (older than a day)",
        "dunning is paused: Stripe outage",
    ]
    human = run("dashboard")
    assert human.exit_code == 0
    assert "warning: last sync was 2 days ago" in human.stdout
    assert "yes: Stripe outage" in human.stdout


def test_an_empty_store_has_empty_figures_and_says_sync_never_ran(store_env):
    board = data(run("dashboard", "--json"))
    assert board["mrr"] == {} and board["booking_fees_30d"] == {}
    assert board["past_due"] == {"count": 0, "amounts": {}}
    assert board["last_sync_at"] is None
    assert board["warnings"] == ["no sync recorded: run `cloudgreet-billing sync`"]


def test_human_dashboard_formats_money(store):
    seed(store)
    result = run("dashboard")
    assert result.exit_code == 0
    assert "$130.00" in result.stdout and "€10.00" in result.stdout
    assert "2 due today, 1 needs review, 1 unreachable" in result.stdout


def test_now_is_fixed():
    assert datetime(2026, 11, 24, 12, tzinfo=UTC) == NOW
