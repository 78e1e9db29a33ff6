"""Finance benchmarks (issue 6). Not a test: prints measurements beside their targets.

    .venv/bin/python tests/benchmarks/bench_finance.py [--rows 1000000] [--invoices 10000]
        [--runs 3] [--only reconcile|export] [--db PATH]

``--db PATH`` keeps the built ledger at PATH and reuses it when it already exists (built
with the same ``--rows``), to iterate faster; ``--only`` runs one of the two measurements.

1. ``reconcile --invoices-file`` with 10,000 Stripe-shaped invoices (created in the last 30
   days) against a SQLite ledger of 1,000,000 rows spread over a year: wall time and peak
   RSS from ``/usr/bin/time -v``, against the targets of 2 s and 300 MB.
2. ``export-csv`` of every ledger row (a window covering the whole year) against
   ``sqlite3 -csv`` running the same date-window query (same columns, same ORDER BY) on
   the same file: wall time, the ratio, and peak RSS, against ≤ 2× and 100 MB.

Each command runs ``--runs`` times, interleaved with its baseline; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cloudgreet_billing.adapters.store.sql_finance import LEDGER_EXPORT_ORDER
from cloudgreet_billing.adapters.store.sqlite import SqliteStore
from cloudgreet_billing.domain.ledger import LedgerDraft
from cloudgreet_billing.domain.ledger_batch import batches_of

NOW = datetime.now(UTC).replace(microsecond=0)
KINDS = ("subscription", "booking_fee", "credit_adjustment")


def timed(argv: list[str], env: dict[str, str], stdout: Path | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS in MB of one run, as ``/usr/bin/time -v`` reports them."""
    with open(stdout or os.devnull, "wb") as out:
        done = subprocess.run(
            ["/usr/bin/time", "-v", *argv], env=env, stdout=out, stderr=subprocess.PIPE, check=False
        )
    report = done.stderr.decode()
    if done.returncode not in (0, 4):
        raise SystemExit(f"{argv[:4]} failed ({done.returncode}):\n{report[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", report)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    assert wall and rss, report
    hours, minutes, seconds = wall.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), int(rss.group(1)) // 1024


def build_ledger(db: Path, rows: int) -> None:
    store = SqliteStore(db)
    store.migrate()
    rng = random.Random(6)
    start = NOW - timedelta(days=365)
    step = timedelta(days=365) / rows

    def drafts():
        for n in range(rows):
            kind = KINDS[n % 3]
            amount = rng.randint(1, 99_999) * (-1 if kind == "credit_adjustment" else 1)
            yield LedgerDraft(
                customer_id=f"cus_{n % 5_000:05d}",
                kind=kind,
                amount=amount,
                currency="usd" if n % 10 else "eur",
                occurred_at=start + n * step,
                invoice_id=f"in_{n % 20_000:06d}",
                description=f"booking {n}" if n % 7 else f"=formula {n}",
            )

    store.import_ledger(batches_of(drafts()), NOW)
    store.close()


def build_invoices(path: Path, count: int) -> None:
    rng = random.Random(9)
    start = int((NOW - timedelta(days=30)).timestamp())
    data = []
    for n in range(count):
        total = rng.randint(1_000, 500_000)
        lines = [
            {
                "id": f"il_{n}_{k}",
                "object": "line_item",
                "amount": total // 3,
                "currency": "usd",
                "description": f"CloudGreet Pro × {k + 1} (at $99.00 / month)",
                "period": {"start": start, "end": start + 2_592_000},
                "pricing": {"price_details": {"price": "price_pro", "product": "prod_pro"}},
                "quantity": k + 1,
                "metadata": {},
            }
            for k in range(3)
        ]
        data.append(
            {
                "id": f"in_{n:06d}",
                "object": "invoice",
                "customer": f"cus_{n % 5_000:05d}",
                "status": ("paid", "paid", "open", "void", "draft")[n % 5],
                "currency": "usd",
                "total": total + total // 10,
                "total_excluding_tax": total,
                "subtotal": total,
                "amount_due": total + total // 10,
                "amount_paid": total + total // 10,
                "amount_remaining": 0,
                "attempt_count": 1,
                "attempted": True,
                "created": start + rng.randint(0, 2_500_000),
                "due_date": None,
                "livemode": False,
                "number": f"CG-{n:06d}",
                "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1/test_{n:06d}",
                "customer_email": f"owner{n % 5_000}@example.com",
                "customer_name": f"Business {n % 5_000}",
                "collection_method": "charge_automatically",
                "billing_reason": "subscription_cycle",
                "status_transitions": {"finalized_at": start, "paid_at": start + 60},
                "parent": {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": f"sub_{n % 5_000:05d}"},
                },
                "lines": {"object": "list", "data": lines, "has_more": False},
                "metadata": {"account": f"acct-{n % 5_000}"},
            }
        )
    path.write_text(json.dumps({"object": "list", "data": data, "has_more": False}))


def export_query(start: datetime, end: datetime) -> str:
    """What ``export-csv`` selects, as plain columns: the baseline's query."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    columns = (
        "id, occurred_at, customer_id, kind, amount, currency, invoice_id, description, "
        "external_id, created_at"
    )
    window = f"occurred_at >= '{start.strftime(fmt)}' AND occurred_at < '{end.strftime(fmt)}'"
    # Two formatted times and fixed names: nothing from outside reaches the query.
    return (
        f"SELECT {columns} FROM billing_usage_ledger WHERE {window} "  # noqa: S608
        f"ORDER BY {LEDGER_EXPORT_ORDER}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("reconcile", "export"))
    parser.add_argument("--db", type=Path, help="keep the ledger here; reuse it if it exists")
    args = parser.parse_args()
    command = [sys.executable, "-m", "cloudgreet_billing"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = args.db or work / "billing.db"
        env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{db}", "BILLING_ACTOR": "bench"}
        if args.db and args.db.exists():
            print(f"reusing the ledger in {db}")
        else:
            print(f"building a {args.rows:,}-row ledger …")
            build_ledger(db, args.rows)
        if args.only != "export":
            bench_reconcile(command, env, work / "invoices.json", args.invoices, args.runs)
        if args.only != "reconcile":
            bench_export(command, env, db, work, args.runs)


def bench_reconcile(
    command: list[str], env: dict[str, str], invoices: Path, count: int, runs: int
) -> None:
    print(f"building {count:,} invoices …")
    build_invoices(invoices, count)
    print(f"invoices file: {invoices.stat().st_size / 1e6:.1f} MB")
    reconcile_runs = [
        timed([*command, "reconcile", "--invoices-file", str(invoices), "--json"], env)
        for _ in range(runs)
    ]
    wall = statistics.median(run[0] for run in reconcile_runs)
    rss = max(run[1] for run in reconcile_runs)
    print(f"reconcile --invoices-file: {wall:.2f} s (target 2 s), peak {rss} MB (target 300 MB)")


def ledger_span(db: Path) -> tuple[datetime, datetime]:
    """A window holding every ledger row (a reused ledger may have been built days ago)."""
    with sqlite3.connect(db) as conn:
        first, last = conn.execute(
            "SELECT min(occurred_at), max(occurred_at) FROM billing_usage_ledger"
        ).fetchone()
    return (
        datetime.fromisoformat(first).replace(microsecond=0) - timedelta(days=1),
        datetime.fromisoformat(last) + timedelta(days=1),
    )


def bench_export(command: list[str], env: dict[str, str], db: Path, work: Path, runs: int) -> None:
    start, end = ledger_span(db)
    ours, theirs = [], []
    for _ in range(runs):
        ours.append(
            timed(
                [
                    *command,
                    "export-csv",
                    "--since",
                    start.isoformat(),
                    "--until",
                    end.isoformat(),
                    "-o",
                    str(work / "export.csv"),
                ],
                env,
            )
        )
        theirs.append(
            timed(["sqlite3", "-csv", str(db), export_query(start, end)], env, work / "b.csv")
        )
    our_wall = statistics.median(run[0] for run in ours)
    base_wall = statistics.median(run[0] for run in theirs)
    lines = sum(1 for _ in (work / "export.csv").open(encoding="utf-8")) - 1
    print(
        f"export-csv ({lines:,} rows): {our_wall:.2f} s vs sqlite3 -csv {base_wall:.2f} s "
        f"= {our_wall / base_wall:.2f}x (target ≤ 2x); peak {max(r[1] for r in ours)} MB "
        f"vs {max(r[1] for r in theirs)} MB (target < 100 MB)"
    )


if __name__ == "__main__":
    main()
