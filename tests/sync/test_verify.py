"""``sync --verify``: the mirror compared with Stripe's lists, on both stores.

Stripe is the fake over HTTP, driven by the real ``stripe`` client; invoices are whole
webhook-shaped objects with real-length ids. Each test builds a mirror that drifted the
way real ones do (a lost ``invoice.paid``, a subscription canceled while the endpoint was
down, an invoice never delivered) and checks what an operator or cron sees.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from tests.stripe_fake import FakeStripe, not_found
from tests.sync.conftest import full_invoice

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
NOW_UNIX = int(NOW.timestamp())
CUSTOMER = "cus_RiJ2m0yQbTgC4x"
LOST_PAYMENT = "in_1QpL8HLkdIwHu7ixl4OzzPMv"
NEVER_DELIVERED = "in_1QpN3bLkdIwHu7ixT5y6U7i8"
IN_SYNC = "in_1QpM0aLkdIwHu7ixQ1w2E3r4"
LIVE_SUB = "sub_1QpL7xLkdIwHu7ixWq3bN2Zs"
CANCELED_SUB = "sub_1QkA9cLkdIwHu7ixHh4Jj5Kk"


def subscription_object(sub_id: str, *, status: str = "active") -> dict[str, Any]:
    """A subscription as ``GET /v1/subscriptions`` returns it (API 2026-10-28), nulls
    included; one item, its period on the item as in current API versions."""
    created = NOW_UNIX - 200 * 86400
    return {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": created,
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": NOW_UNIX - 86400 if status == "canceled" else None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": CUSTOMER,
        "days_until_due": None,
        "default_payment_method": "pm_1QpL6qLkdIwHu7ixr2mXq9Ze",
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": NOW_UNIX - 86400 if status == "canceled" else None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_RiJ2n4xTq8Lw0P",
                    "object": "subscription_item",
                    "created": created,
                    "current_period_end": NOW_UNIX + 20 * 86400,
                    "current_period_start": NOW_UNIX - 10 * 86400,
                    "discounts": [],
                    "metadata": {},
                    "price": {
                        "id": "price_1QpL5sLkdIwHu7ixBq2Nw3Ez",
                        "object": "price",
                        "active": True,
                        "billing_scheme": "per_unit",
                        "currency": "usd",
                        "product": "prod_RiJ1kPz8YqVx2M",
                        "recurring": {
                            "interval": "month",
                            "interval_count": 1,
                            "meter": None,
                            "usage_type": "licensed",
                        },
                        "type": "recurring",
                        "unit_amount": 12900,
                        "unit_amount_decimal": "12900",
                    },
                    "quantity": 1,
                    "subscription": sub_id,
                    "tax_rates": [],
                }
            ],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": LOST_PAYMENT,
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "pending_update": None,
        "schedule": None,
        "start_date": created,
        "status": status,
        "test_clock": None,
        "trial_end": None,
        "trial_start": None,
    }


@pytest.fixture(autouse=True)
def unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pacing between pages here; ``test_pages_are_paced…`` checks the pacer."""
    from cloudgreet_billing.services import drift

    monkeypatch.setattr(drift, "PAGES_PER_SECOND", 10_000.0)


def _not_canceled(item: Any, query: Any) -> bool:
    # GET /v1/subscriptions without ``status`` lists every subscription not canceled;
    # ``status=all`` lists all (API reference, "List subscriptions").
    return query.get("status") == "all" or item["status"] != "canceled"


def cli(*args: str) -> Any:
    with freeze_time(NOW):
        return CliRunner().invoke(app, list(args))


def _backfill(fake: FakeStripe, invoices: list[dict[str, Any]], subs: list[dict[str, Any]]) -> None:
    """Mirror this state of Stripe, as a first ``sync --backfill`` would."""
    fake.paginate("/v1/customers", [])
    fake.paginate("/v1/invoices", invoices)
    fake.paginate("/v1/subscriptions", subs, where=_not_canceled)
    result = CliRunner().invoke(app, ["sync", "--backfill", "--json"])
    assert result.exit_code == 0, result.output


@pytest.fixture
def drifted(fake: FakeStripe, store_env: str) -> FakeStripe:
    """The mirror saw both invoices open and the subscription live; then, while the
    webhook endpoint was down, one invoice was paid, a new one was created, and the old
    subscription was canceled."""
    created = NOW_UNIX - 5 * 86400
    with freeze_time(NOW - timedelta(days=2)):
        _backfill(
            fake,
            [
                full_invoice(LOST_PAYMENT, created=created),
                full_invoice(IN_SYNC, created=created - 86400, amount=4900),
            ],
            [subscription_object(LIVE_SUB), subscription_object(CANCELED_SUB)],
        )
    fake.paginate(
        "/v1/invoices",
        [
            full_invoice(LOST_PAYMENT, created=created, status="paid", attempt_count=2),
            full_invoice(IN_SYNC, created=created - 86400, amount=4900),
            full_invoice(NEVER_DELIVERED, created=NOW_UNIX - 3600, amount=2500),
        ],
    )
    fake.paginate(
        "/v1/subscriptions",
        [subscription_object(LIVE_SUB), subscription_object(CANCELED_SUB, status="canceled")],
        where=_not_canceled,
    )
    fake.reply(
        "GET",
        f"/v1/subscriptions/{CANCELED_SUB}",
        subscription_object(CANCELED_SUB, status="canceled"),
    )
    return fake


def _differences(body: dict[str, Any]) -> set[tuple[str, str, Any, Any, Any]]:
    return {
        (d["id"], d["problem"], d["field"], d["mirror"], d["stripe"]) for d in body["differences"]
    }


def test_verify_reports_every_difference_and_exits_4(drifted: FakeStripe) -> None:
    result = cli("sync", "--verify", "--json")
    assert result.exit_code == 4, result.output
    body = json.loads(result.stdout)["data"]
    assert _differences(body) == {
        (LOST_PAYMENT, "differs", "status", "open", "paid"),
        (LOST_PAYMENT, "differs", "amount_paid", 0, 12900),
        (LOST_PAYMENT, "differs", "amount_remaining", 12900, 0),
        (LOST_PAYMENT, "differs", "attempt_count", 1, 2),
        (NEVER_DELIVERED, "missing_locally", None, None, None),
        (CANCELED_SUB, "differs", "status", "active", "canceled"),
    }
    assert (body["invoices_checked"], body["subscriptions_checked"]) == (3, 2)
    assert (body["objects_differing"], body["repaired"]) == (3, 0)
    # Read-only without --repair: a second look finds the same.
    again = json.loads(cli("sync", "--verify", "--json").stdout)["data"]
    assert _differences(again) == _differences(body)


def test_verify_pages_stripe_in_created_windows(drifted: FakeStripe) -> None:
    before = len(drifted.requests_to("GET", "/v1/invoices"))
    assert cli("sync", "--verify", "--days", "30", "--json").exit_code == 4
    windows = drifted.requests_to("GET", "/v1/invoices")[before:]
    bounds = [(int(r.query["created[gte]"]), int(r.query["created[lt]"])) for r in windows]
    # 30 days in week-long windows, oldest first, each starting where the last ended.
    assert len(bounds) == 5
    assert bounds[0][0] == NOW_UNIX - 30 * 86400 and bounds[-1][1] == NOW_UNIX
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(r.query["limit"] == "100" for r in windows)


def test_human_output_names_each_difference_whole(drifted: FakeStripe) -> None:
    result = cli("sync", "--verify")
    assert result.exit_code == 4
    out = result.stdout
    assert "compared 3 invoices" in out and "2 subscriptions" in out
    assert f"invoice {LOST_PAYMENT}: status is open here, paid in Stripe" in out
    assert f"invoice {LOST_PAYMENT}: amount_remaining is $129.00 here, $0.00 in Stripe" in out
    assert f"invoice {NEVER_DELIVERED}: in Stripe, missing from the mirror" in out
    assert f"subscription {CANCELED_SUB}: status is active here, canceled in Stripe" in out
    assert "3 objects differ: run again with --repair" in out


def test_repair_applies_stripe_and_stops_dunning_for_the_paid_invoice(
    drifted: FakeStripe,
) -> None:
    # The lost invoice had failed before the outage: an alert and dunning steps wait.
    from tests.sync.conftest import event

    failed = event(
        "evt_1QpL8ILkdIwHu7ixZx9Yy8Ww",
        "invoice.payment_failed",
        full_invoice(LOST_PAYMENT, created=NOW_UNIX - 5 * 86400),
        NOW_UNIX - 5 * 86400 + 60,
    )
    with freeze_time(NOW - timedelta(days=2)):
        applied = CliRunner().invoke(
            app, ["sync", "--events-file", "-", "--json"], input=json.dumps(failed)
        )
    assert applied.exit_code == 0, applied.output
    waiting = json.loads(cli("dunning", "list", "--invoice", LOST_PAYMENT, "--json").stdout)
    assert {step["status"] for step in waiting["data"]} == {"scheduled"}
    assert (
        json.loads(cli("alerts", "list", "--json").stdout)["data"][0]["invoice_id"] == LOST_PAYMENT
    )

    result = cli("sync", "--verify", "--repair", "--json")
    assert result.exit_code == 4, result.output  # it drifted: someone should learn why
    body = json.loads(result.stdout)["data"]
    assert (body["objects_differing"], body["repaired"]) == (3, 3)
    assert all(d["repaired"] for d in body["differences"])

    assert json.loads(cli("alerts", "list", "--json").stdout)["data"] == []
    steps = json.loads(cli("dunning", "list", "--invoice", LOST_PAYMENT, "--json").stdout)
    assert len(steps["data"]) == len(waiting["data"])
    assert {step["status"] for step in steps["data"]} == {"canceled"}
    after = cli("sync", "--verify", "--json")
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["data"]["differences"] == []
    assert "the mirror matches Stripe" in cli("sync", "--verify").stdout


def test_repair_never_reopens_a_settled_invoice(fake: FakeStripe, store_env: str) -> None:
    # The mirror holds the invoice paid; a Stripe answering "open" (a wrong account, a
    # test clock) is reported, and the guard keeps the paid row: a person must look.
    created = NOW_UNIX - 86400
    with freeze_time(NOW - timedelta(hours=2)):
        _backfill(fake, [full_invoice(LOST_PAYMENT, created=created, status="paid")], [])
    fake.paginate("/v1/invoices", [full_invoice(LOST_PAYMENT, created=created)])
    fake.paginate("/v1/subscriptions", [], where=_not_canceled)
    result = cli("sync", "--verify", "--repair", "--json")
    assert result.exit_code == 4
    body = json.loads(result.stdout)["data"]
    assert body["repaired"] == 0
    assert (LOST_PAYMENT, "differs", "status", "paid", "open") in _differences(body)
    assert "1 need a person" in cli("sync", "--verify", "--repair").stdout


def test_a_deleted_draft_and_a_vanished_subscription_are_reported(
    fake: FakeStripe, store_env: str
) -> None:
    created = NOW_UNIX - 86400
    with freeze_time(NOW - timedelta(hours=2)):
        _backfill(
            fake,
            [full_invoice(NEVER_DELIVERED, created=created, status="draft")],
            [subscription_object(CANCELED_SUB)],
        )
    fake.paginate("/v1/invoices", [])
    fake.paginate("/v1/subscriptions", [], where=_not_canceled)
    fake.reply("GET", f"/v1/subscriptions/{CANCELED_SUB}", not_found("subscription", CANCELED_SUB))
    body = json.loads(cli("sync", "--verify", "--json").stdout)["data"]
    assert _differences(body) == {
        (NEVER_DELIVERED, "not_in_stripe_list", None, "draft", None),
        (CANCELED_SUB, "not_in_stripe_list", None, "active", None),
    }


def test_an_unreadable_object_is_reported_not_fatal(fake: FakeStripe, store_env: str) -> None:
    bad = full_invoice(NEVER_DELIVERED, created=NOW_UNIX - 3600)
    bad["amount_due"] = "twelve"
    fake.paginate("/v1/invoices", [bad, full_invoice(IN_SYNC, created=NOW_UNIX - 7200)])
    fake.paginate("/v1/subscriptions", [], where=_not_canceled)
    result = cli("sync", "--verify", "--json")
    assert result.exit_code == 4
    body = json.loads(result.stdout)["data"]
    [unreadable] = body["unreadable"]
    assert unreadable["id"] == NEVER_DELIVERED
    assert "amount_due" in unreadable["reason"]
    assert (IN_SYNC, "missing_locally", None, None, None) in _differences(body)


def test_verify_backs_off_on_429_and_finishes(fake: FakeStripe, store_env: str) -> None:
    from tests.stripe_fake import rate_limited

    fake.paginate("/v1/invoices", [], before=[rate_limited()])
    fake.paginate("/v1/subscriptions", [], where=_not_canceled)
    result = cli("sync", "--verify", "--days", "3", "--json")
    assert result.exit_code == 0, result.output
    assert len(fake.requests_to("GET", "/v1/invoices")) == 2  # the 429, then the page


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--verify", "--days", "0"), "--days 0 is out of range"),
        (("--verify", "--days", "401"), "--days 401 is out of range"),
        (("--repair",), "--days and --repair go with --verify"),
        (("--verify", "--backfill"), "--verify takes no --since, --backfill or --events-file"),
    ],
)
def test_verify_refuses_bad_options(store_env: str, args: tuple[str, ...], says: str) -> None:
    result = cli("sync", *args, "--json")
    assert result.exit_code == 2
    assert says in json.loads(result.stdout)["error"]["message"]


def test_pages_are_paced_under_stripes_rate_limit() -> None:
    from cloudgreet_billing.adapters.stripe import StripeGateway

    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    gateway = StripeGateway(
        "sk_test_" + "x" * 24, sleep=sleep, monotonic=lambda: clock[0], pages_per_second=5
    )
    for _ in range(3):
        gateway._pace()
    assert slept == [pytest.approx(0.2), pytest.approx(0.2)]


def test_a_link_that_is_not_an_id_is_dropped_not_fatal(fake: FakeStripe, store_env: str) -> None:
    # stripe-mock's invoice links its subscription as the bare word "subscription": the
    # invoice must still be mirrored (and so dunned), without the bad link.
    odd = full_invoice(NEVER_DELIVERED, created=NOW_UNIX - 3600)
    odd["parent"]["subscription_details"]["subscription"] = "subscription"
    with freeze_time(NOW):
        _backfill(fake, [odd], [])
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    store = open_store(load_settings())
    try:
        mirrored = store.get_invoice(NEVER_DELIVERED)
    finally:
        store.close()
    assert mirrored is not None and mirrored.subscription_id is None
    assert mirrored.amount_due == 12900


def test_backfill_leaves_out_an_unreadable_object_and_mirrors_the_rest(
    fake: FakeStripe, store_env: str
) -> None:
    bad = full_invoice(NEVER_DELIVERED, created=NOW_UNIX - 3600)
    bad["attempt_count"] = "two"
    fake.paginate("/v1/customers", [])
    fake.paginate("/v1/invoices", [bad, full_invoice(IN_SYNC, created=NOW_UNIX - 7200)])
    fake.paginate("/v1/subscriptions", [subscription_object(LIVE_SUB)], where=_not_canceled)
    result = cli("sync", "--backfill", "--json")
    assert result.exit_code == 4, result.output
    body = json.loads(result.stdout)["data"]
    assert (body["invoices_backfilled"], body["subscriptions_backfilled"]) == (1, 1)
    assert body["objects_unreadable"] == 1
    [reason] = body["unreadable"]
    assert reason.startswith(f"invoice {NEVER_DELIVERED} field attempt_count")
    human = cli("sync", "--backfill")
    assert human.exit_code == 4
    assert f"left out, unreadable: invoice {NEVER_DELIVERED} field attempt_count" in human.stdout


def test_a_server_that_ignores_the_window_counts_each_invoice_once(
    fake: FakeStripe, store_env: str
) -> None:
    # stripe-mock answers every list with its fixture, whatever ``created`` asks for.
    old = full_invoice(IN_SYNC, created=NOW_UNIX - 900 * 86400)
    with freeze_time(NOW - timedelta(hours=1)):
        _backfill(fake, [old], [])
    fake.reply(
        "GET",
        "/v1/invoices",
        {"object": "list", "data": [old], "has_more": False, "url": "/v1/invoices"},
    )
    fake.paginate("/v1/subscriptions", [], where=_not_canceled)
    result = cli("sync", "--verify", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)["data"]
    assert (body["invoices_checked"], body["differences"]) == (1, [])
