"""Benchmark: ``sync --events-file`` of 10,000 realistic events against a bare baseline.

    .venv/bin/python -m tests.benchmarks.bench_sync [--events 10000] [--rounds 5]
        [--backend sqlite|postgres ...] [--profile]

Not a test: it prints measurements. The events are what a Stripe account sends over a
billing cycle: whole invoices as Stripe sends them (about 3 KB of JSON each, nulls
included, ids of real length), through ``invoice.created``, ``invoice.finalized``, one or
two ``invoice.payment_failed`` for some, ``invoice.paid`` for most, beside
``customer.*`` and ``customer.subscription.*`` events; pairs of events share a second.

Each round times two processes on the same file, alternating which goes first:

1. the real command, ``python -m cloudgreet_billing sync --events-file F --json``, as a
   subprocess into a freshly migrated store. A subprocess, not the service call in this
   process: it is what an operator or cron runs, start-up, file check and report included,
   and the baseline is a process too;
2. the baseline: a bare Python process that parses the same lines with ``json.loads`` and
   inserts every event into ``billing_stripe_events`` and every invoice into
   ``billing_invoices`` (an upsert that keeps the latest) in one transaction, through
   ``sqlite3`` or ``psycopg``, into a store migrated the same way.

Printed per backend: the median wall-clock time of each over ``--rounds`` rounds and their
ratio (target: under 2x on SQLite), events/s, and the ratio of their CPU time (user +
system of the process; on PostgreSQL the server's work is not in it). Other processes on
the machine slow both sides, the longer one more: on a busy machine read the CPU ratio
beside the wall-clock one; the load average is printed too. PostgreSQL runs when
``BILLING_TEST_DATABASE_URL`` is set (or a throwaway local cluster can be started).

``--profile`` instead runs the CLI's sync once in this process under cProfile and prints
the top functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.sync.conftest import T0, event, full_invoice  # noqa: E402

TARGET_RATIO = 2.0
SYNC = ("sync", "--events-file")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class Ids:
    """Stripe-like ids of real length (``in_`` + 24, ``cus_`` + 14), from a fixed seed."""

    def __init__(self, seed: int = 11) -> None:
        self._random = random.Random(seed)

    def __call__(self, prefix: str, length: int = 24) -> str:
        tail = "".join(self._random.choice(_BASE62) for _ in range(length - 1))
        return f"{prefix}_1{tail}"


def full_customer(customer_id: str, n: int, created: int) -> dict[str, Any]:
    """A customer as a ``customer.*`` event carries it."""
    return {
        "id": customer_id,
        "object": "customer",
        "address": {
            "city": "Austin",
            "country": "US",
            "line1": f"{100 + n} Congress Ave",
            "line2": None,
            "postal_code": "78701",
            "state": "TX",
        },
        "balance": 0,
        "created": created,
        "currency": "usd",
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": f"billing+{n}@practice{n}.example",
        "invoice_prefix": f"CG{n:05d}",
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": f"pm_1QpK{n:020d}",
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {"practice_id": str(n)},
        "name": f"Practice {n} Dental",
        "next_invoice_sequence": 8,
        "phone": f"+1512555{n % 10_000:04d}",
        "preferred_locales": ["en-US"],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def full_subscription(
    subscription_id: str, customer_id: str, status: str, created: int
) -> dict[str, Any]:
    """A subscription as a ``customer.subscription.*`` event carries it (one item)."""
    return {
        "id": subscription_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": created,
        "billing_cycle_anchor_config": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer_id,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_RiJ2Xy6hQm1Abc",
                    "object": "subscription_item",
                    "created": created,
                    "current_period_end": created + 30 * 86400,
                    "current_period_start": created,
                    "discounts": [],
                    "metadata": {},
                    "price": {
                        "id": "price_1QkP0ALkdIwHu7ixRecpt129",
                        "object": "price",
                        "active": True,
                        "billing_scheme": "per_unit",
                        "created": T0 - 400 * 86400,
                        "currency": "usd",
                        "livemode": False,
                        "lookup_key": "receptionist_monthly",
                        "metadata": {},
                        "nickname": None,
                        "product": "prod_RdS9yH2mTq0Vn1",
                        "recurring": {
                            "interval": "month",
                            "interval_count": 1,
                            "meter": None,
                            "usage_type": "licensed",
                        },
                        "tax_behavior": "unspecified",
                        "type": "recurring",
                        "unit_amount": 12900,
                        "unit_amount_decimal": "12900",
                    },
                    "quantity": 1,
                    "subscription": subscription_id,
                    "tax_rates": [],
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_update": None,
        "start_date": created,
        "status": status,
        "test_clock": None,
        "trial_end": None,
        "trial_start": None,
    }


def history(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """``count`` events of a monthly billing cycle, oldest first, as the Events API or a
    replay gives them.

    Invoices are created every 10 to 25 minutes (about 2,400 a month). Per customer:
    ``customer.updated`` and ``customer.subscription.updated`` now and then; an invoice
    goes created (draft) → finalized (open, an hour later) → paid for 70% of them; the
    other 30% fail once (half of those again three days later, the subscription then
    ``past_due``) before most are paid. Pairs such as finalized + paid or failed +
    subscription update share a second.
    """
    ids = Ids(seed)
    shuffle = random.Random(seed)
    events: list[dict[str, Any]] = []
    t = T0
    n = 0

    def add(kind: str, obj: dict[str, Any], at: int) -> None:
        events.append(event(ids("evt"), kind, obj, at))

    while len(events) < count:
        customer_id, subscription_id = ids("cus", 14), ids("sub")
        invoice_id = ids("in")
        fate = shuffle.random()
        if n % 3 == 0:
            add("customer.updated", full_customer(customer_id, n, T0 - 86400 * 90), t)
        base = {"invoice_id": invoice_id, "n": n, "customer": customer_id}
        base.update(subscription=subscription_id, created=t)
        add("invoice.created", invoice("draft", 0, **base), t)
        t += 1
        add("invoice.finalized", invoice("open", 0, **base), t + 3600)
        if fate < 0.7:
            add("invoice.paid", invoice("paid", 1, **base), t + 3600)
        else:
            add("invoice.payment_failed", invoice("open", 1, **base), t + 3601)
            if fate < 0.85:
                add("invoice.payment_failed", invoice("open", 2, **base), t + 3 * 86400)
                subscription = full_subscription(subscription_id, customer_id, "past_due", t)
                add("customer.subscription.updated", subscription, t + 3 * 86400)
            if fate < 0.8 or fate > 0.9:
                add("invoice.paid", invoice("paid", 2, **base), t + 5 * 86400)
        if n % 4 == 0:
            subscription = full_subscription(subscription_id, customer_id, "active", t)
            add("customer.subscription.updated", subscription, t + 5 * 86400 + 1)
        n += 1
        t += shuffle.randint(600, 1500)
    # Stable: events of the same second keep the order they were sent in.
    events.sort(key=lambda item: item["created"])
    return events[:count]


def invoice(status: str, attempts: int, *, invoice_id: str, n: int, **shape: Any) -> dict[str, Any]:
    """A whole invoice of customer ``n`` (its contacts copied on, as Stripe does)."""
    obj = full_invoice(invoice_id, status=status, attempt_count=attempts, **shape)
    obj["customer_email"] = f"billing+{n}@practice{n}.example"
    obj["customer_name"] = f"Practice {n} Dental"
    obj["number"] = f"CG{n:05d}-0008"
    return obj


# --- the two processes -----------------------------------------------------------------
BASELINE = r"""
import json, sys, time
kind, url, path = sys.argv[1:4]
EVENT = ("INSERT INTO billing_stripe_events (id, type, stripe_created, livemode, outcome, "
         "source, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
COLUMNS = ("id", "customer_id", "number", "status", "currency", "amount_due", "amount_paid",
           "amount_remaining", "total", "attempt_count", "attempted", "livemode", "raw",
           "stripe_created", "stripe_updated_at", "synced_at")
INVOICE = (f"INSERT INTO billing_invoices ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in COLUMNS)}) ON CONFLICT (id) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:]))
if kind == "sqlite":
    import sqlite3
    from datetime import datetime, timezone
    connection = sqlite3.connect(url, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    stamp = lambda seconds: datetime.fromtimestamp(seconds, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z")
    placeholder = lambda sql: sql
else:
    import psycopg
    from datetime import datetime, timezone
    connection = psycopg.connect(url)
    stamp = lambda seconds: datetime.fromtimestamp(seconds, timezone.utc)
    placeholder = lambda sql: sql.replace("?", "%s")
now = stamp(time.time())
cursor = connection.cursor()
if kind == "sqlite":
    cursor.execute("BEGIN IMMEDIATE")
event_sql, invoice_sql = placeholder(EVENT), placeholder(INVOICE)
with open(path, encoding="utf-8") as lines:
    for line in lines:
        e = json.loads(line)
        created = stamp(e["created"])
        cursor.execute(event_sql, (e["id"], e["type"], created, e["livemode"], "applied",
                                   "file", now))
        o = e["data"]["object"]
        if o.get("object") == "invoice":
            cursor.execute(invoice_sql, (
                o["id"], o["customer"], o["number"], o["status"], o["currency"],
                o["amount_due"], o["amount_paid"], o["amount_remaining"], o["total"],
                o["attempt_count"], o["attempted"], o["livemode"], json.dumps(o),
                stamp(o["created"]), created, now))
connection.commit()
connection.close()
"""


def _environment(url: str, workdir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BILLING_", "STRIPE_", "SUPABASE_"))
    }
    env.update(
        BILLING_DATABASE_URL=url,
        PYTHONPATH=str(REPO),
        NO_COLOR="1",
        HOME=str(workdir),
    )
    return env


class Timed:
    """Wall-clock and CPU seconds (user + system) of the child processes run inside."""

    def __enter__(self) -> Timed:
        self._cpu = _children_cpu()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _children_cpu() - self._cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_cli(url: str, path: Path, workdir: Path) -> tuple[Timed, dict[str, Any]]:
    """The real command, start-up included."""
    with Timed() as timed:
        result = subprocess.run(
            [sys.executable, "-m", "cloudgreet_billing", *SYNC, str(path), "--json"],
            env=_environment(url, workdir),
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"sync failed ({result.returncode}): {result.stdout}{result.stderr}")
    return timed, json.loads(result.stdout)["data"]


def time_baseline(kind: str, target: str, path: Path, workdir: Path) -> Timed:
    with Timed() as timed:
        result = subprocess.run(
            [sys.executable, "-c", BASELINE, kind, target, str(path)],
            env=_environment("", workdir),
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"baseline failed ({result.returncode}): {result.stderr}")
    return timed


# --- fresh stores for each run ---------------------------------------------------------
def migrate(url: str) -> None:
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    store = open_store(load_settings({"BILLING_DATABASE_URL": url}), check_schema=False)
    store.migrate()
    store.close()


class SqliteStores:
    """Copies of one migrated SQLite file: a fresh store costs a file copy."""

    kind = "sqlite"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.template = workdir / "template.db"
        migrate(f"sqlite:///{self.template}")
        self.count = 0

    @contextmanager
    def fresh(self) -> Iterator[tuple[str, str]]:
        """A fresh store: its URL for the CLI and its target for the baseline."""
        self.count += 1
        path = self.workdir / f"run{self.count}.db"
        shutil.copyfile(self.template, path)
        os.chmod(path, 0o600)
        try:
            yield f"sqlite:///{path}", str(path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        pass


class PostgresStores:
    """Databases made from one migrated template database (``CREATE DATABASE … TEMPLATE``)."""

    kind = "postgres"

    def __init__(self, server: str) -> None:
        import psycopg

        self.server = server
        self.template = f"bench_sync_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.template}"')
        migrate(self._url(self.template))

    def _url(self, name: str) -> str:
        return f"{self.server.rpartition('/')[0]}/{name}"

    @contextmanager
    def fresh(self) -> Iterator[tuple[str, str]]:
        import psycopg

        name = f"{self.template}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        try:
            yield self._url(name), self._url(name)
        finally:
            with psycopg.connect(self.server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')


def postgres_server() -> tuple[str | None, Any]:
    base = os.environ.get("BILLING_TEST_DATABASE_URL")
    if base:
        return base, None
    from tests.pg_cluster import start_cluster

    cluster = start_cluster()
    return (None, None) if cluster is None else (cluster.url, cluster)


def measure(stores: Any, path: Path, events: int, rounds: int, workdir: Path) -> None:
    cli: list[Timed] = []
    baseline: list[Timed] = []
    for round_number in range(rounds):
        runs = ["cli", "baseline"] if round_number % 2 == 0 else ["baseline", "cli"]
        for which in runs:
            with stores.fresh() as (url, target):
                if which == "cli":
                    timed, report = time_cli(url, path, workdir)
                    assert report["events_seen"] == events, report
                    assert report["events_failed"] == 0, report["failures"]
                    cli.append(timed)
                else:
                    baseline.append(time_baseline(stores.kind, target, path, workdir))
    wall = statistics.median(t.wall for t in cli)
    base_wall = statistics.median(t.wall for t in baseline)
    cpu = statistics.median(t.cpu for t in cli)
    base_cpu = statistics.median(t.cpu for t in baseline)
    ratio = wall / base_wall
    verdict = "" if stores.kind != "sqlite" else (" ok" if ratio < TARGET_RATIO else " SLOW")
    print(
        f"{stores.kind:<10}{events:>8,}{wall:>9.2f}s{events / wall:>10,.0f}"
        f"{base_wall:>11.2f}s{events / base_wall:>10,.0f}{ratio:>8.2f}x{verdict:<5}"
        f"{cpu / base_cpu:>8.2f}x{os.getloadavg()[0]:>7.2f}",
        flush=True,
    )
    print(
        f"{'':<10}wall: sync {', '.join(f'{t.wall:.2f}' for t in cli)};"
        f" baseline {', '.join(f'{t.wall:.2f}' for t in baseline)}"
        f"  cpu: sync {', '.join(f'{t.cpu:.2f}' for t in cli)};"
        f" baseline {', '.join(f'{t.cpu:.2f}' for t in baseline)}",
        flush=True,
    )


def profile(path: Path, workdir: Path, top: int) -> None:
    """The CLI's sync once, in this process, under cProfile."""
    import cProfile
    import pstats

    from typer.testing import CliRunner

    from cloudgreet_billing.cli import app

    stores = SqliteStores(workdir)
    with stores.fresh() as (url, _):
        os.environ["BILLING_DATABASE_URL"] = url
        profiler = cProfile.Profile()
        profiler.enable()
        result = CliRunner().invoke(app, ["sync", "--events-file", str(path), "--json"])
        profiler.disable()
    if result.exit_code != 0:
        raise SystemExit(f"sync failed: {result.output}")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--backend", action="append", choices=["sqlite", "postgres"], dest="backends"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one SQLite sync")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    events = history(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "events.ndjson"
        path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
        size = path.stat().st_size
        print(
            f"{len(events):,} events, {size / 1e6:.1f} MB ({size / len(events) / 1e3:.1f} KB "
            f"an event); {args.rounds} rounds, CLI and baseline alternating; medians"
        )
        if args.profile:
            profile(path, workdir, args.top)
            return
        print(
            f"{'backend':<10}{'events':>8}{'sync':>10}{'ev/s':>10}"
            f"{'baseline':>12}{'ev/s':>10}{'ratio':>9}{'':<5}{'cpu ratio':>9}{'load':>7}"
        )
        for kind in args.backends or ["sqlite", "postgres"]:
            if kind == "sqlite":
                measure(SqliteStores(workdir), path, len(events), args.rounds, workdir)
                continue
            server, cluster = postgres_server()
            if server is None:
                print("postgres  (no BILLING_TEST_DATABASE_URL and no local cluster: skipped)")
                continue
            stores = PostgresStores(server)
            try:
                measure(stores, path, len(events), args.rounds, workdir)
            finally:
                stores.close()
                if cluster is not None:
                    cluster.stop()


if __name__ == "__main__":
    main()
