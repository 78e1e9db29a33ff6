"""A throwaway workspace with realistic billing data, for trying the playbook safely.

``write_workspace`` writes a ``.env`` that points every part at files inside the workspace
(an SQLite store, file outboxes for email and SMS), a day of Stripe events as NDJSON, and a
month of usage-ledger rows. ``CHECKLIST`` is the daily checklist run against it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cloudgreet_billing.adapters.files import refuse_store_files, store_files, write_file
from cloudgreet_billing.errors import BadInput

#: The first line of every workspace's ``.env``: how a folder is told to be a demo's.
ENV_HEADER: Final = "# A demo workspace: everything stays in this folder, nothing reaches Stripe."
STORE_FILE: Final = "billing.db"
EVENTS_FILE: Final = "events.ndjson"
LEDGER_FILE: Final = "usage.csv"
EXPORT_FILE: Final = "ledger-last-7-days.csv"


@dataclass(frozen=True)
class DemoCustomer:
    id: str
    name: str
    email: str
    phone: str | None
    currency: str
    plan_amount: int
    interval: str
    booking_fees: tuple[int, ...]
    #: ``paid``, ``failed`` (with attempts), or ``action_required``.
    outcome: str
    attempts: int = 1
    #: Booking fees the ledger misses: Stripe invoiced them, the ledger never recorded them.
    unrecorded_fees: int = 0
    percent_off: int | None = None


CUSTOMERS: Final = (
    DemoCustomer(
        "cus_DemoBrightSmile",
        "Bright Smile Dental",
        "billing@brightsmile.example",
        "+15550100101",
        "usd",
        29_900,
        "month",
        (450,) * 38,
        "paid",
    ),
    DemoCustomer(
        "cus_DemoPawsVet",
        "Paws Veterinary",
        "frontdesk@pawsvet.example",
        "+15550100102",
        "usd",
        14_900,
        "month",
        (450,) * 22,
        "failed",
        attempts=3,
        unrecorded_fees=6,
    ),
    DemoCustomer(
        "cus_DemoGlowSalon",
        "Glow Salon",
        "hello@glowsalon.example",
        None,
        "usd",
        9_900,
        "month",
        (300,) * 15,
        "failed",
        attempts=1,
    ),
    DemoCustomer(
        "cus_DemoFixItAuto",
        "FixIt Auto",
        "office@fixitauto.example",
        "+15550100104",
        "usd",
        149_000,
        "year",
        (),
        "paid",
    ),
    DemoCustomer(
        "cus_DemoPhysioBerlin",
        "Physio Berlin",
        "praxis@physio-berlin.example",
        "+4930555010",
        "eur",
        19_900,
        "month",
        (400,) * 12,
        "action_required",
    ),
    DemoCustomer(
        "cus_DemoLakeYoga",
        "Lake Yoga",
        "studio@lakeyoga.example",
        "+15550100106",
        "usd",
        9_900,
        "month",
        (250,) * 9,
        "paid",
        percent_off=20,
    ),
)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _customer(c: DemoCustomer, created: datetime) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "customer",
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "currency": c.currency,
        "created": _unix(created),
        "delinquent": c.outcome == "failed",
        "livemode": False,
    }


def _subscription(c: DemoCustomer, number: int, created: datetime, now: datetime) -> dict[str, Any]:
    discounts = []
    if c.percent_off:
        discounts.append(
            {
                "object": "discount",
                "start": _unix(created),
                "end": None,
                "coupon": {"id": "LOYAL20", "percent_off": c.percent_off, "duration": "forever"},
            }
        )
    period_end = _unix(now + timedelta(days=20 if c.interval == "month" else 200))
    items = [
        {
            "id": f"si_Demo{number}a",
            "object": "subscription_item",
            "quantity": 1,
            "current_period_end": period_end,
            "discounts": [],
            "price": {
                "id": f"price_Demo{c.interval}{c.currency}",
                "currency": c.currency,
                "unit_amount": c.plan_amount,
                "type": "recurring",
                "recurring": {
                    "interval": c.interval,
                    "interval_count": 1,
                    "usage_type": "licensed",
                },
            },
        }
    ]
    if c.booking_fees:
        items.append(
            {
                "id": f"si_Demo{number}b",
                "object": "subscription_item",
                "current_period_end": period_end,
                "discounts": [],
                "price": {
                    "id": f"price_DemoBooking{c.currency}",
                    "currency": c.currency,
                    "unit_amount": c.booking_fees[0],
                    "type": "recurring",
                    "recurring": {
                        "interval": "month",
                        "interval_count": 1,
                        "usage_type": "metered",
                    },
                },
            }
        )
    return {
        "id": f"sub_Demo{number}",
        "object": "subscription",
        "customer": c.id,
        "status": "past_due" if c.outcome == "failed" else "active",
        "currency": c.currency,
        "created": _unix(created),
        "cancel_at_period_end": False,
        "pause_collection": None,
        "discounts": discounts,
        "livemode": False,
        "items": {"object": "list", "data": items},
    }


def _invoice_total(c: DemoCustomer) -> int:
    plan = c.plan_amount * (100 - (c.percent_off or 0)) // 100
    return plan + sum(c.booking_fees)


def _invoice(c: DemoCustomer, number: int, created: datetime, status: str) -> dict[str, Any]:
    total = _invoice_total(c)
    paid = status == "paid"
    return {
        "id": f"in_Demo{number:04d}",
        "object": "invoice",
        "customer": c.id,
        "number": f"DEMO-{number:04d}",
        "status": status,
        "currency": c.currency,
        "amount_due": total,
        "amount_paid": total if paid else 0,
        "amount_remaining": 0 if paid else total,
        "total": total,
        "total_excluding_tax": total,
        "attempt_count": c.attempts if not paid else 1,
        "attempted": True,
        "created": _unix(created),
        "due_date": None,
        "livemode": False,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/demo/in_Demo{number:04d}",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": f"sub_Demo{number}"},
        },
    }


def _event(number: int, kind: str, obj: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "id": f"evt_Demo{number:04d}",
        "object": "event",
        "type": kind,
        "created": _unix(at),
        "livemode": False,
        "api_version": "2026-10-28.endive",
        "data": {"object": obj},
        "request": {"id": None, "idempotency_key": None},
    }


def demo_events(now: datetime) -> Iterator[dict[str, Any]]:
    """Customers, subscriptions and this month's invoices, as Stripe would send them."""
    sequence = 0

    def emit(kind: str, obj: dict[str, Any], at: datetime) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return _event(sequence, kind, obj, at)

    start = now - timedelta(days=200)
    for number, c in enumerate(CUSTOMERS, start=1):
        yield emit("customer.created", _customer(c, start), start)
        yield emit("customer.subscription.created", _subscription(c, number, start, now), start)
    for number, c in enumerate(CUSTOMERS, start=1):
        issued = now - timedelta(days=3 + number, hours=2)
        yield emit("invoice.finalized", _invoice(c, number, issued, "open"), issued)
        if c.outcome == "paid":
            yield emit("invoice.paid", _invoice(c, number, issued, "paid"), issued)
        elif c.outcome == "failed":
            # The first failure dates the dunning timeline; later ones only count attempts.
            failed_at = now - timedelta(days=3 if c.attempts >= 3 else 0, hours=1)
            invoice = _invoice(c, number, issued, "open")
            yield emit("invoice.payment_failed", invoice, failed_at)
        else:
            yield emit(
                "invoice.payment_action_required",
                _invoice(c, number, issued, "open"),
                issued + timedelta(minutes=5),
            )
    alert = {
        "object": "billing.alert_triggered",
        "customer": CUSTOMERS[0].id,
        "created": _unix(now - timedelta(hours=3)),
        "value": 3_800,
        "livemode": False,
        "alert": {
            "id": "alrt_DemoBookings",
            "object": "billing.alert",
            "title": "Booking volume over plan",
            "alert_type": "usage_threshold",
            "usage_threshold": {
                "gte": 3_000,
                "meter": "mtr_DemoBookings",
                "recurrence": "one_time",
            },
        },
    }
    yield emit("billing.alert.triggered", alert, now - timedelta(hours=3))


def demo_ledger_rows(now: datetime) -> Iterator[list[str]]:
    """What CloudGreet's booking system recorded: a subscription row and a fee per booking."""
    for number, c in enumerate(CUSTOMERS, start=1):
        places = 2
        invoice_id = f"in_Demo{number:04d}"
        issued = now - timedelta(days=3 + number, hours=3)
        plan = c.plan_amount * (100 - (c.percent_off or 0)) // 100
        yield [
            c.id,
            "subscription",
            _major(plan, places),
            c.currency,
            _iso(issued),
            invoice_id,
            f"{c.interval}ly plan",
            f"demo-sub-{number}",
        ]
        recorded = c.booking_fees[: len(c.booking_fees) - c.unrecorded_fees]
        for booking, fee in enumerate(recorded, start=1):
            at = issued - timedelta(days=booking % 25, hours=booking % 9)
            yield [
                c.id,
                "booking_fee",
                _major(fee, places),
                c.currency,
                _iso(at),
                invoice_id,
                f"booking #{booking}",
                f"demo-fee-{number}-{booking}",
            ]
    # A goodwill credit outside any invoice, as finance records them.
    yield [
        CUSTOMERS[5].id,
        "credit_adjustment",
        "-5.00",
        "usd",
        _iso(now - timedelta(days=2)),
        "",
        "goodwill: studio closed for a storm",
        "demo-credit-1",
    ]


def _major(amount: int, places: int) -> str:
    whole, fraction = divmod(amount, 10**places)
    return f"{whole}.{fraction:0{places}d}"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_workspace(directory: Path, protected: Sequence[Path] = ()) -> None:
    """Refuse a folder the demo would damage: one whose ``billing.db`` is the store in use
    (``protected``), or one holding a ``.env`` the demo did not write."""
    store = directory / STORE_FILE
    for name in store_files(store):
        try:
            refuse_store_files(name, protected)
        except BadInput:
            raise BadInput(
                f"refusing --dir {directory}: its {STORE_FILE} is the billing store in use, "
                "and the demo would write its made-up data into it",
                hint="give a new or empty folder, e.g. --dir /tmp/billing-demo",
                code="refused_overwrite",
            ) from None
    env = directory / ".env"
    if env.is_file() and not env.read_text(encoding="utf-8", errors="replace").startswith(
        ENV_HEADER
    ):
        raise BadInput(
            f"refusing --dir {directory}: it has a .env the demo did not write, "
            "which the demo would replace",
            hint="give a new or empty folder, e.g. --dir /tmp/billing-demo",
            code="refused_overwrite",
        )


def write_workspace(
    directory: Path, now: datetime, *, protected: Sequence[Path] = ()
) -> dict[str, Path]:
    """Write the workspace's files (by ``adapters.files``' rules, never over a
    ``protected`` file); returns their paths by name."""
    if directory.exists():
        check_workspace(directory, protected)
    directory.mkdir(parents=True, exist_ok=True)
    outbox = directory / "outbox"
    outbox.mkdir(exist_ok=True)
    env = directory / ".env"
    write_file(
        env,
        (
            f"{ENV_HEADER}\n"
            "# No Stripe key: dry runs check the local mirror. A key set in your shell wins\n"
            "# over this line, and every command then says so on stderr.\n"
            "STRIPE_SECRET_KEY=\n"
            f"BILLING_DATABASE_URL=sqlite:///{(directory / STORE_FILE).resolve()}\n"
            "BILLING_EMAIL_BACKEND=file\nBILLING_SMS_BACKEND=file\n"
            f"BILLING_OUTBOX_DIR={outbox.resolve()}\n"
            "EMAIL_FROM=billing@cloudgreet.example\n"
            "FINANCE_LEAD_EMAIL=finance-lead@cloudgreet.example\n"
            "APP_URL=https://app.cloudgreet.example\n"
            "BILLING_ACTOR=demo\n",
        ),
        protected=protected,
    )
    events = directory / EVENTS_FILE
    write_file(
        events, (json.dumps(event) + "\n" for event in demo_events(now)), protected=protected
    )
    ledger = directory / LEDGER_FILE
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        [
            "customer_id",
            "kind",
            "amount",
            "currency",
            "occurred_at",
            "invoice_id",
            "description",
            "external_id",
        ]
    )
    writer.writerows(demo_ledger_rows(now))
    write_file(ledger, (text.getvalue(),), protected=protected)
    return {
        "env": env,
        "events": events,
        "ledger": ledger,
        "outbox": outbox,
        "export": directory / EXPORT_FILE,
    }


@dataclass(frozen=True)
class ChecklistStep:
    title: str
    #: The command's arguments, run in the workspace (its ``.env`` is read from there).
    args: tuple[str, ...]
    #: Exit codes that are the expected outcome here (reconcile flags the planted variance).
    expected: tuple[int, ...] = (0,)


#: The alert queue's first failed invoice, its second, and the customer whose bank asks
#: for authentication: what the operator actions are tried on.
RETRY_INVOICE: Final = "in_Demo0002"
RESEND_INVOICE: Final = "in_Demo0003"
PORTAL_CUSTOMER: Final = "cus_DemoPhysioBerlin"


def checklist(files: dict[str, Path]) -> list[ChecklistStep]:
    """The daily checklist, as an on-call engineer and cron would run it, in the workspace.

    The operator actions run as dry runs: they need no Stripe key (the checks read the
    local mirror), show the exact request, and send nothing."""
    return [
        ChecklistStep("Install the schema", ("db", "migrate")),
        ChecklistStep(
            "Pull Stripe events (here: from a file, as `stripe listen` pipes them)",
            ("sync", "--events-file", files["events"].name),
        ),
        ChecklistStep(
            "Import the month's usage ledger", ("ledger", "import", files["ledger"].name)
        ),
        ChecklistStep("Morning dashboard", ("dashboard",)),
        ChecklistStep("Open alerts", ("alerts", "list")),
        ChecklistStep(
            "Retry a failed payment (dry run: no key needed, nothing is charged)",
            ("retry", RETRY_INVOICE, "--dry-run"),
        ),
        ChecklistStep(
            "Resend the pay link (dry run: nothing is sent)",
            ("resend-link", RESEND_INVOICE, "--dry-run"),
        ),
        ChecklistStep(
            "Email a customer-portal link (dry run: nothing is sent)",
            ("portal", PORTAL_CUSTOMER, "--send", "--dry-run"),
        ),
        ChecklistStep(
            "Dunning: the plan, before anything is sent", ("dunning", "run", "--dry-run")
        ),
        ChecklistStep(
            "Dunning: send what is due (cron does this every few minutes)", ("dunning", "run")
        ),
        ChecklistStep("Dunning steps still ahead", ("dunning", "list")),
        ChecklistStep("Is dunning working? Recovery over 30 days", ("dunning", "report")),
        ChecklistStep(
            "Reconcile Stripe against the ledger (exit 4 flags a variance)",
            ("reconcile", "--offline"),
            expected=(0, 4),
        ),
        ChecklistStep("Weekly CSV for finance", ("export-csv", "-o", files["export"].name)),
    ]


#: What the closing message suggests next, each run in the workspace as printed.
CARRY_ON: Final = (
    ("alerts", "show", "1"),
    ("reconcile", "--offline", "--customer", "cus_DemoPawsVet"),
)
