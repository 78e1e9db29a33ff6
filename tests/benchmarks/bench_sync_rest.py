"""Benchmark: ``sync`` of 10,000 events through Supabase's REST API, beside PostgreSQL.

Run: python tests/benchmarks/bench_sync_rest.py [--events 10000]
(PostgreSQL: BILLING_TEST_DATABASE_URL, else a throwaway local cluster when the binaries exist.)

Applies the events as ``sync`` does (``services.sync.apply_events``, batches of 500) to
the PostgreSQL store and to the Supabase store through the PostgREST stand-in and the
real ``supabase`` client (every store call through REST, none through the owner's
connection), and prints events/s with the HTTP requests each took. The
stand-in runs in this process on the same machine: the network of a hosted project adds
its round-trip time to each request, which is why the requests are counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_sync import history  # noqa: E402
from tests.benchmarks.databases import fresh_database, postgres_server  # noqa: E402

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def timed(store: Any, events: list[dict[str, Any]]) -> float:
    from cloudgreet_billing.services.sync import apply_events

    started = time.perf_counter()
    report = apply_events(store, events, source="file", now=NOW)
    elapsed = time.perf_counter() - started
    assert report.events_failed == 0 and report.events_seen == len(events), report.failures
    return elapsed


def main() -> None:
    from cloudgreet_billing.adapters.store.postgres import PostgresStore
    from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore
    from tests.postgrest.project import authenticator_url, ensure_roles, prepare_database
    from tests.postgrest.server import PostgrestStandin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    events = history(args.events)

    with postgres_server() as base:
        direct = PostgresStore(fresh_database(base))
        direct.migrate()
        direct_seconds = timed(direct, events)
        direct.close()

        ensure_roles(base)
        project = fresh_database(base)
        prepare_database(project)
        owner = PostgresStore(project)
        owner.migrate()
        standin = PostgrestStandin(project, authenticator_url(project)).start()
        try:
            rest = SupabaseStore(standin.url, standin.keys.secret)
            before = rest._api.requests
            rest_seconds = timed(rest, events)
            requests = rest._api.requests - before
        finally:
            standin.close_clients()
            standin.stop()
            owner.close()

    print(f"{'store':<22}{'events':>8}{'seconds':>9}{'events/s':>10}{'requests':>10}")
    print(
        f"{'postgres (direct)':<22}{len(events):>8}{direct_seconds:>9.1f}"
        f"{len(events) / direct_seconds:>10,.0f}{'-':>10}"
    )
    print(
        f"{'supabase (REST)':<22}{len(events):>8}{rest_seconds:>9.1f}"
        f"{len(events) / rest_seconds:>10,.0f}{requests:>10}"
    )


if __name__ == "__main__":
    main()
