"""Dunning benchmarks (issue 4). Not a test: prints measurements beside their targets.

    /tmp/venv/bin/python tests/benchmarks/bench_dunning.py [--steps 10000]
        [--postgres URL|auto] [--dir PATH]

Seeds ``--steps`` unpaid invoices whose day-0 email is due (plus their later, not yet
due steps) in a fresh store, then times one ``cloudgreet-billing dunning run`` process,
start-up included:

1. ``file`` backend: steps/s against the target of 2,000; beside it, the same number of
   messages written by the file backend alone (no store), the floor of what a run costs.
2. ``smtp`` backend against a local aiosmtpd: messages/s against the target of 200, and
   the number of SMTP connections the run opened (target: one); beside it, the same
   messages sent by the SMTP adapter alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cloudgreet_billing.adapters.notify.email_file import FileEmailSender  # noqa: E402
from cloudgreet_billing.adapters.notify.email_smtp import SmtpEmailSender  # noqa: E402
from cloudgreet_billing.adapters.notify.protocol import OutgoingEmail  # noqa: E402
from cloudgreet_billing.clock import utcnow  # noqa: E402
from cloudgreet_billing.domain.dunning import TimelinePlanner  # noqa: E402
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice  # noqa: E402


def seed(database_url: str, steps: int) -> None:
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    store = open_store(load_settings({"BILLING_DATABASE_URL": database_url}), check_schema=False)
    store.migrate()
    now = utcnow()
    store.upsert_customer(
        parse_customer({"id": "cus_bench", "email": "payer@example.com", "created": 1_780_000_000}),
        now,
        now,
    )
    invoices = [
        parse_invoice(
            {
                "id": f"in_{n:06d}",
                "customer": "cus_bench",
                "status": "open",
                "number": f"CG-{n:06d}",
                "currency": "usd",
                "amount_due": 12345,
                "amount_remaining": 12345,
                "hosted_invoice_url": f"https://invoice.stripe.com/i/{n}",
                "created": 1_780_000_000,
            }
        )
        for n in range(steps)
    ]
    store.upsert_invoices(invoices, now, now)
    planner = TimelinePlanner()
    store.schedule_steps(
        [
            draft
            for invoice in invoices
            for draft in planner(
                invoice_id=invoice.id,
                customer_id="cus_bench",
                alert_id=None,
                first_failed_at=now - timedelta(hours=1),
            )
        ],
        now,
    )
    if store.backend == "postgres":
        # A production table has planner statistics (autovacuum); a table loaded a moment
        # ago has none, and the claim's plans would be those of an empty table.
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("ANALYZE")
    store.close()


def run(env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "cloudgreet_billing", "dunning", "run", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"dunning run failed ({result.returncode}): {result.stdout[:2000]}")
    return elapsed, json.loads(result.stdout)["data"]


def fresh_database(tmp: Path, name: str, postgres: str | None) -> str:
    if postgres is None:
        return f"sqlite:///{tmp}/{name}.db"
    import psycopg

    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "bench_{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "bench_{name}"')
    return f"{postgres.rpartition('/')[0]}/bench_{name}"


def sample(n: int) -> OutgoingEmail:
    return OutgoingEmail(
        to="payer@example.com", subject="Payment failed", body="Hi,\n\n" * 8, step_id=n
    )


def bench_file(steps: int, postgres: str | None, where: str | None) -> None:
    with tempfile.TemporaryDirectory(dir=where) as tmp_name:
        tmp = Path(tmp_name)
        url = fresh_database(tmp, "file", postgres)
        seed(url, steps)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "BILLING_DATABASE_URL": url,
            "BILLING_EMAIL_BACKEND": "file",
            "BILLING_SMS_BACKEND": "file",
            "BILLING_OUTBOX_DIR": str(tmp / "outbox"),
            "EMAIL_FROM": "billing@cloudgreet.test",
        }
        elapsed, data = run(env)
        written = len(list((tmp / "outbox").glob("*.eml")))
        assert data["sent"] == steps == written, (data, written)
        alone = FileEmailSender(tmp / "alone", "billing@cloudgreet.test")
        started = time.perf_counter()
        for n in range(steps):
            alone.send(sample(n))
        floor = time.perf_counter() - started
    rate = steps / elapsed
    print(
        f"dunning run, file backend ({'postgres' if postgres else 'sqlite'}): {steps:,} steps "
        f"in {elapsed:5.2f} s = {rate:7,.0f} steps/s (target 2,000: {rate / 2000:4.2f}x)   "
        f"file backend alone: {steps / floor:7,.0f} msgs/s"
    )


class Counting:
    def __init__(self) -> None:
        self.messages = 0
        self.sessions = 0
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname  # a custom EHLO hook must record the greeting
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages += 1
        return "250 OK"


def bench_smtp(steps: int, postgres: str | None, where: str | None) -> None:
    from aiosmtpd.controller import Controller

    from tests.pg_cluster import free_port

    sink = Counting()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory(dir=where) as tmp_name:
            url = fresh_database(Path(tmp_name), "smtp", postgres)
            seed(url, steps)
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "BILLING_DATABASE_URL": url,
                "BILLING_EMAIL_BACKEND": "smtp",
                "SMTP_URL": f"smtp://127.0.0.1:{port}",
                "EMAIL_FROM": "billing@cloudgreet.test",
            }
            elapsed, data = run(env)
        assert data["sent"] == steps == sink.messages, (data, sink.messages)
        sessions = sink.sessions
        alone = SmtpEmailSender(f"smtp://127.0.0.1:{port}", "billing@cloudgreet.test")
        started = time.perf_counter()
        for n in range(steps):
            alone.send(sample(n))
        alone.close()
        floor = time.perf_counter() - started
    finally:
        controller.stop()
    rate = steps / elapsed
    print(
        f"dunning run, smtp backend ({'postgres' if postgres else 'sqlite'}): {steps:,} msgs "
        f"in {elapsed:5.2f} s = {rate:7,.0f} msgs/s (target 200: {rate / 200:4.2f}x), "
        f"{sessions} SMTP connection(s)   smtp adapter alone: {steps / floor:7,.0f} msgs/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument(
        "--postgres",
        help="a server URL (each case makes its own database), or 'auto' to start a "
        "throwaway cluster as the tests do",
    )
    parser.add_argument(
        "--dir",
        help="where the store and outbox live (default: the temp folder); file "
        "creation speed of this file system bounds the file backend",
    )
    args = parser.parse_args()
    print(f"workspace: {args.dir or tempfile.gettempdir()}")
    cluster = None
    postgres = args.postgres
    if postgres == "auto":
        from tests.pg_cluster import start_cluster

        cluster = start_cluster()
        if cluster is None:
            raise SystemExit("no PostgreSQL binaries here; pass a server URL")
        postgres = cluster.url
    try:
        bench_file(args.steps, postgres, args.dir)
        bench_smtp(args.steps, postgres, args.dir)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
