"""The ledger through the Supabase REST store (issue 14). Not a test: prints measurements.

    .venv/bin/python tests/benchmarks/bench_supabase_ledger.py --postgres URL
        [--rows 100000] [--only import|export|list]

On a fresh database of the server at URL, set up as a Supabase project's, with the
PostgREST stand-in (tests/postgrest) in front of it:

1. ``import``: ``import_ledger`` of ``--rows`` rows through REST (staged, then committed
   by one call), beside the PostgreSQL store's COPY import of the same rows: seconds,
   rows/s, requests, and the commit call's own seconds (what must fit in its timeout).
2. ``export``: ``ledger_csv_chunks`` of every row through REST, beside the PostgreSQL
   store's COPY export: seconds, requests, and the peak growth of this process's memory
   (tracemalloc) while streaming.
3. ``list``: ``ledger list --limit 5000`` through REST: seconds and requests.

The stand-in is Python (one process, the GIL shared with the client), so REST figures
here are a floor on what the client spends, not hosted Supabase's latency: every request
also crosses the internet there.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.adapters.store.protocol_ledger import LedgerQuery
from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore
from cloudgreet_billing.domain.ledger import LedgerDraft
from cloudgreet_billing.domain.ledger_batch import batches_of
from cloudgreet_billing.domain.reconciliation import Window
from tests.benchmarks.databases import drop_database, fresh_database
from tests.postgrest.project import authenticator_url, ensure_roles, prepare_database
from tests.postgrest.server import PostgrestStandin

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def drafts(rows: int, prefix: str) -> list[LedgerDraft]:
    start = NOW - timedelta(days=365)
    step = timedelta(days=365) / rows
    return [
        LedgerDraft(
            customer_id=f"cus_QTest{n % 5_000:05d}",
            kind="booking_fee",
            amount=100 + n % 9_900,
            currency="usd" if n % 10 else "eur",
            occurred_at=start + n * step,
            invoice_id=f"in_1QpL8HLkdIwHu7ix{n % 20_000:08d}",
            description=f"booking {n}" if n % 7 else f"=formula {n}",
            external_id=f"{prefix}_{n:08d}",
        )
        for n in range(rows)
    ]


def fresh_project(server: str) -> str:
    """A new database set up as a Supabase project (roles, schema), as its owner."""
    url = fresh_database(server, "billing_bench")
    ensure_roles(server)
    prepare_database(url)
    owner = PostgresStore(url)
    owner.migrate()
    owner.close()
    return url


def requests(standin: PostgrestStandin, fn: str = "") -> int:
    return len([r for r in standin.requests if fn in r.path])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--only", choices=("import", "export", "list"))
    args = parser.parse_args()
    url = fresh_project(args.postgres)
    standin = PostgrestStandin(url, authenticator_url(url)).start()
    try:
        rest = SupabaseStore(standin.url, standin.keys.secret, timeout=300)
        direct = PostgresStore(url)
        rows = args.rows
        print(f"{rows:,} ledger rows")
        if args.only in (None, "import"):
            given = drafts(rows, "rest")
            began = time.perf_counter()
            outcome = rest.import_ledger(batches_of(given), NOW)
            took = time.perf_counter() - began
            assert outcome.inserted == rows, outcome
            print(
                f"import  REST   {took:7.1f} s  {rows / took:9,.0f} rows/s  "
                f"{requests(standin, 'stage'):5d} stage + "
                f"{requests(standin, 'commit')} commit requests"
            )
            began = time.perf_counter()
            direct.import_ledger(batches_of(drafts(rows, "copy")), NOW)
            took = time.perf_counter() - began
            print(f"import  COPY   {took:7.1f} s  {rows / took:9,.0f} rows/s")
            with psycopg.connect(url) as conn:
                conn.execute("TRUNCATE billing_usage_ledger")
            staged_id = str(uuid.uuid4())
            batch = [
                [
                    d.customer_id,
                    d.kind,
                    d.amount,
                    d.currency,
                    d.occurred_at.isoformat(),
                    d.invoice_id,
                    d.description,
                    d.external_id,
                ]
                for d in given
            ]
            for first in range(0, rows, 5_000):
                rest._api.rpc(
                    "billing_api_ledger_import_stage",
                    {
                        "p_import_id": staged_id,
                        "p_first_seq": first + 1,
                        "p_rows": batch[first : first + 5_000],
                    },
                )
            began = time.perf_counter()
            rest._api.rpc(
                "billing_api_ledger_import_commit",
                {
                    "p_import_id": staged_id,
                    "p_rows": rows,
                    "p_now": NOW.isoformat(),
                    "p_dry_run": False,
                },
            )
            print(
                f"commit  alone  {time.perf_counter() - began:7.1f} s  (one call: one transaction)"
            )
        if args.only == "export" or args.only == "list":
            direct.import_ledger(batches_of(drafts(rows, "seed")), NOW)
        window = Window(NOW - timedelta(days=400), NOW)
        if args.only in (None, "export"):
            before = requests(standin)
            tracemalloc.start()
            began = time.perf_counter()
            lines = sum(n for _, n in rest.ledger_csv_chunks(window))
            took = time.perf_counter() - began
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            print(
                f"export  REST   {took:7.1f} s  {lines / took:9,.0f} rows/s  "
                f"{requests(standin) - before:5d} requests  peak {peak:.1f} MiB"
            )
            began = time.perf_counter()
            lines = sum(n for _, n in direct.ledger_csv_chunks(window))
            print(f"export  COPY   {time.perf_counter() - began:7.1f} s")
        if args.only in (None, "list"):
            before = requests(standin)
            began = time.perf_counter()
            listed = rest.list_ledger(LedgerQuery(limit=5_000))
            took = time.perf_counter() - began
            print(
                f"list    REST   {took:7.2f} s  {len(listed):,} entries  "
                f"{requests(standin) - before} requests"
            )
        direct.close()
        rest._api.close()
    finally:
        standin.stop()
        drop_database(args.postgres, url)


if __name__ == "__main__":
    main()
