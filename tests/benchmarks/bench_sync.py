"""Benchmark: ``sync --events-file`` over 10,000 events on SQLite and PostgreSQL.

Run: python tests/benchmarks/bench_sync.py [--events 10000]
(PostgreSQL: BILLING_TEST_DATABASE_URL, else a throwaway local cluster when the binaries exist.)

Prints events/s through the real CLI next to the targets (6,000/s SQLite, 2,000/s Postgres)
and next to a baseline of one transaction per event, the design the batches replace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.sync.conftest import T0, customer, event, invoice, subscription  # noqa: E402

TARGETS = {"sqlite": 6000.0, "postgres": 2000.0}


def history(count: int) -> list[dict[str, Any]]:
    """A realistic mix: invoices finalized, failing, paid; customers and subscriptions."""
    events: list[dict[str, Any]] = []
    n = 0
    while len(events) < count:
        iid, t = f"in_b{n}", T0 + n * 10
        kind = n % 10
        if kind < 4:
            events.append(
                event(f"evt_b{n}a", "invoice.finalized", invoice(iid, attempt_count=0), t)
            )
            events.append(event(f"evt_b{n}b", "invoice.paid", invoice(iid, status="paid"), t + 1))
        elif kind < 6:
            events.append(event(f"evt_b{n}a", "invoice.payment_failed", invoice(iid), t))
            events.append(
                event(f"evt_b{n}b", "invoice.payment_failed", invoice(iid, attempt_count=2), t + 1)
            )
        elif kind < 8:
            events.append(event(f"evt_b{n}a", "customer.updated", customer(f"cus_b{n}"), t))
            events.append(
                event(
                    f"evt_b{n}b", "customer.subscription.updated", subscription(f"sub_b{n}"), t + 1
                )
            )
        else:
            events.append(
                event(f"evt_b{n}a", "charge.succeeded", {"id": f"ch_{n}", "object": "charge"}, t)
            )
            events.append(event(f"evt_b{n}b", "invoice.payment_failed", invoice(iid), t + 1))
        n += 1
    return events[:count]


def run_cli(url: str, path: Path) -> tuple[float, dict[str, Any]]:
    from typer.testing import CliRunner

    from cloudgreet_billing.cli import app

    os.environ["BILLING_DATABASE_URL"] = url
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["sync", "--events-file", str(path), "--json"])
    elapsed = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"sync failed: {result.output}")
    return elapsed, json.loads(result.stdout)["data"]


def run_per_event(url: str, events: list[dict[str, Any]]) -> float:
    """Baseline: the same work with one transaction per event."""
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.config import load_settings
    from cloudgreet_billing.domain.dunning import TimelinePlanner
    from cloudgreet_billing.domain.events import plan_event

    os.environ["BILLING_DATABASE_URL"] = url
    store = open_store(load_settings())
    planner = TimelinePlanner()
    started = time.perf_counter()
    for item in events:
        store.apply_event_plans([plan_event(item, "file")], planner=planner, now=utcnow())
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def migrate(url: str) -> None:
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    os.environ["BILLING_DATABASE_URL"] = url
    store = open_store(load_settings(), check_schema=False)
    store.migrate()
    store.close()


def postgres_urls() -> tuple[Any, list[str]]:
    import psycopg

    base = os.environ.get("BILLING_TEST_DATABASE_URL")
    cluster = None
    if not base:
        from tests.pg_cluster import start_cluster

        cluster = start_cluster()
        if cluster is None:
            return None, []
        base = cluster.url
    urls = []
    for _ in range(2):
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        urls.append(f"{base.rpartition('/')[0]}/{name}")
    return cluster, urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--baseline-events", type=int, default=2_000)
    args = parser.parse_args()
    events = history(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "events.ndjson"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        backends: dict[str, list[str]] = {
            "sqlite": [f"sqlite:///{workdir}/a.db", f"sqlite:///{workdir}/b.db"]
        }
        cluster, pg = postgres_urls()
        if pg:
            backends["postgres"] = pg
        print(
            f"{'backend':<10}{'events':>8}{'batched ev/s':>14}{'target':>9}{'vs target':>11}"
            f"{'1 tx/event ev/s':>17}{'speed-up':>10}"
        )
        try:
            for name, (url, baseline_url) in backends.items():
                migrate(url)
                migrate(baseline_url)
                elapsed, report = run_cli(url, path)
                assert report["events_seen"] == len(events) and report["events_failed"] == 0
                rate = len(events) / elapsed
                sample = events[: args.baseline_events]
                base_rate = len(sample) / run_per_event(baseline_url, sample)
                print(
                    f"{name:<10}{len(events):>8}{rate:>14,.0f}{TARGETS[name]:>9,.0f}"
                    f"{rate / TARGETS[name]:>10.2f}x{base_rate:>17,.0f}{rate / base_rate:>9.1f}x"
                )
        finally:
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    main()
