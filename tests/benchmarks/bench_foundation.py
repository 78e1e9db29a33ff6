"""Foundation benchmarks (issue 2). Not a test: prints measurements beside their baselines.

    .venv/bin/python tests/benchmarks/bench_foundation.py [--rows 1000000] [--runs 10]

1. ``ledger import`` of a generated CSV into a fresh SQLite store: rows/s and peak memory
   (``/usr/bin/time -v``), against the targets of 150,000 rows/s and 150 MB; then the same
   file again (every row a duplicate), and a file whose external ids are random UUIDs
   (the unique key's worst case) into another fresh store.
2. Start-up: ``cloudgreet-billing --help`` and ``ledger list --json`` (empty SQLite store)
   against a minimal one-command Typer app run the same way; median of N runs each,
   interleaved so that machine noise hits both sides alike. Target ratio ≤ 1.25.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MINIMAL_TYPER_APP = """
import typer
app = typer.Typer()
@app.command()
def hello(name: str = "world") -> None:
    print(name)
app()
"""


CSV_ONLY = """
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    for _ in csv.reader(f):
        pass
"""


def script() -> str:
    return str(Path(sys.executable).parent / "cloudgreet-billing")


def make_csv(path: Path, rows: int, *, uuids: bool = False) -> None:
    rng = random.Random(7)
    kinds = ("booking_fee", "subscription", "credit_adjustment")
    with path.open("w", encoding="utf-8") as out:
        out.write(
            "customer_id,kind,amount,currency,occurred_at,invoice_id,description,external_id\n"
        )
        for i in range(rows):
            kind = kinds[i % 3]
            amount = (
                f"{'-' if kind == 'credit_adjustment' else ''}{rng.randint(1, 99999) / 100:.2f}"
            )
            day = 1 + i % 28
            external_id = uuid.UUID(int=rng.getrandbits(128)) if uuids else f"ext-{i}"
            out.write(
                f"cus_{i % 5000:05d},{kind},{amount},usd,2026-10-{day:02d}T{i % 24:02d}:00:00Z,"
                f"in_{i % 20000:06d},booking {i},{external_id}\n"
            )


def import_once(csv_path: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak MB of one ``ledger import`` run as a user runs it."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", script(), "ledger", "import", str(csv_path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    return elapsed, peak_kb / 1024


def fresh_store(tmp: str, name: str) -> dict[str, str]:
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp}/{name}.db"}
    subprocess.run([script(), "db", "migrate", "--json"], env=env, check=True, capture_output=True)
    return env


def bench_import(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "ledger.csv"
        make_csv(csv_path, rows)
        env = fresh_store(tmp, "bench")
        elapsed, peak = import_once(csv_path, env)
        rate = rows / elapsed
        # The machine's speed right now: this VM's CPU varies by half from hour to hour, so
        # read the rate beside the time Python's csv module alone takes to read the file.
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", CSV_ONLY, str(csv_path)], check=True)
        reading = time.perf_counter() - started
        print(
            f"ledger import  {rows:>9,} rows  {elapsed:6.2f} s  {rate:>9,.0f} rows/s "
            f"(target 150,000: {rate / 150_000:4.2f}x)  peak {peak:5.1f} MB "
            f"(target 150 MB)   csv.reader alone {reading:5.2f} s "
            f"(import {elapsed / reading:4.1f}x)"
        )
        again, again_peak = import_once(csv_path, env)
        print(
            f"  same file again (all duplicates)  {again:6.2f} s  {rows / again:>9,.0f} rows/s  "
            f"peak {again_peak:5.1f} MB"
        )
        uuid_path = Path(tmp) / "uuids.csv"
        make_csv(uuid_path, rows, uuids=True)
        random_ids, random_peak = import_once(uuid_path, fresh_store(tmp, "uuids"))
        print(
            f"  random UUID external ids         {random_ids:6.2f} s  "
            f"{rows / random_ids:>9,.0f} rows/s  peak {random_peak:5.1f} MB"
        )


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def bench_startup(runs: int) -> None:
    # Measure an installed tool: bytecode compiled, as pip leaves it (and as the baseline's
    # Typer is). With PYTHONDONTWRITEBYTECODE set, an edited module would be compiled again
    # on every run and dominate the measurement.
    import cloudgreet_billing

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(cloudgreet_billing.__file__).parent)],
        check=True,
        capture_output=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "minimal_typer_app.py"
        baseline.write_text(MINIMAL_TYPER_APP)
        env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp}/empty.db"}
        subprocess.run([script(), "db", "migrate"], env=env, check=True, capture_output=True)
        cases = {
            "--help": ([script(), "--help"], [sys.executable, str(baseline), "--help"]),
            "ledger list --json": (
                [script(), "ledger", "list", "--json"],
                [sys.executable, str(baseline), "--name", "x"],
            ),
        }
        for label, (ours, theirs) in cases.items():
            mine, base = [], []
            for _ in range(runs):
                mine.append(timed(ours, env))
                base.append(timed(theirs, env))
            ratio = statistics.median(mine) / statistics.median(base)
            print(
                f"start-up {label:<20} ours {statistics.median(mine) * 1000:6.1f} ms   "
                f"minimal Typer app {statistics.median(base) * 1000:6.1f} ms   "
                f"ratio {ratio:4.2f} (target <= 1.25)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    bench_startup(args.runs)
    bench_import(args.rows)


if __name__ == "__main__":
    main()
