"""Benchmark: the recovery read (``dunning report``) of 10,000 failed invoices through
Supabase's REST API, beside PostgreSQL.

Run: python tests/benchmarks/bench_recovery_rest.py [--invoices 10000]
(PostgreSQL: BILLING_TEST_DATABASE_URL, else a throwaway local cluster when the binaries exist.)

Seeds a project with ``--invoices`` invoices failed in the last 30 days, each with its three
dunning steps (two sent) and a resent pay link, and reads the window with
``failed_invoices`` from the PostgreSQL store and from the Supabase store through the
PostgREST stand-in and the real ``supabase`` client; prints invoices/s, the HTTP requests
and the peak Python memory of each read (tracemalloc), which stays flat with the window's
length because both read a page at a time. The stand-in runs in this process on the same
machine: a hosted project adds its round trip to each request.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.databases import fresh_database, postgres_server  # noqa: E402

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

SEED = """
INSERT INTO billing_invoices (id, customer_id, status, currency, amount_due, amount_paid,
    amount_remaining, attempt_count, attempted, livemode, raw, first_failed_at, synced_at,
    stripe_created, stripe_updated_at)
SELECT 'in_1QpL8HLkdIwHu7ix' || lpad(n::text, 6, '0'),
       'cus_QpL8HL' || lpad((n %% 5000)::text, 8, '0'),
       CASE WHEN n %% 3 = 0 THEN 'paid' ELSE 'open' END, 'usd', 12900,
       CASE WHEN n %% 3 = 0 THEN 12900 ELSE 0 END, CASE WHEN n %% 3 = 0 THEN 0 ELSE 12900 END,
       1, true, false,
       jsonb_build_object('status_transitions', jsonb_build_object('paid_at',
           extract(epoch FROM %(now)s::timestamptz)::bigint)),
       %(now)s::timestamptz - (n %% 29 + 1) * interval '1 day', %(now)s,
       %(now)s::timestamptz - interval '40 days', %(now)s
FROM generate_series(1, %(count)s) n;
INSERT INTO billing_dunning_events (invoice_id, customer_id, day, channel, template, due_at,
    status, sent_at, created_at, updated_at)
SELECT i.id, i.customer_id, s.day, s.channel, 'reminder', i.first_failed_at,
       CASE WHEN s.day < 3 THEN 'sent' ELSE 'scheduled' END,
       CASE WHEN s.day < 3 THEN i.first_failed_at + s.day * interval '1 day' END,
       %(now)s, %(now)s
FROM billing_invoices i
CROSS JOIN (VALUES (0, 'email'), (1, 'sms'), (3, 'email')) AS s(day, channel);
INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
SELECT first_failed_at + interval '2 hours', 'tester@ci', 'resend-link', id, 'sent', '{}'
FROM billing_invoices;
"""


def timed(store: Any, count: int) -> tuple[float, int]:
    """Seconds to read the window whole, and the peak memory it took (bytes)."""
    from cloudgreet_billing.services.recovery import recovery_window

    tracemalloc.start()
    started = time.perf_counter()
    seen = sum(1 for _ in store.failed_invoices(recovery_window(NOW)))
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen == count, (seen, count)
    return elapsed, peak


def main() -> None:
    import psycopg

    from cloudgreet_billing.adapters.store.postgres import PostgresStore
    from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore
    from tests.postgrest.project import authenticator_url, ensure_roles, prepare_database
    from tests.postgrest.server import PostgrestStandin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    args = parser.parse_args()

    with postgres_server() as base:
        ensure_roles(base)
        project = fresh_database(base)
        prepare_database(project)
        owner = PostgresStore(project)
        owner.migrate()
        with psycopg.connect(project, autocommit=True) as conn:
            for statement in SEED.split(";\n")[:-1]:
                conn.execute(statement, {"now": NOW - timedelta(seconds=1), "count": args.invoices})
            conn.execute("ANALYZE")
        direct_seconds, direct_peak = timed(owner, args.invoices)
        standin = PostgrestStandin(project, authenticator_url(project)).start()
        try:
            rest = SupabaseStore(standin.url, standin.keys.secret)
            before = rest._api.requests
            rest_seconds, rest_peak = timed(rest, args.invoices)
            requests = rest._api.requests - before
        finally:
            standin.close_clients()
            standin.stop()
            owner.close()

    n = args.invoices
    header = f"{'store':<22}{'invoices':>9}{'seconds':>9}{'invoices/s':>12}{'requests':>10}"
    print(f"{header}{'peak MiB':>10}")
    for label, seconds, peak, calls in (
        ("postgres (direct)", direct_seconds, direct_peak, "-"),
        ("supabase (REST)", rest_seconds, rest_peak, str(requests)),
    ):
        print(
            f"{label:<22}{n:>9}{seconds:>9.2f}{n / seconds:>12,.0f}{calls:>10}{peak / 2**20:>10.1f}"
        )


if __name__ == "__main__":
    main()
