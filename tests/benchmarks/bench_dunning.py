"""Dunning benchmarks (issues 4 and 11). Not a test: prints measurements beside targets.

    .venv/bin/python tests/benchmarks/bench_dunning.py [--steps 10000]
        [--postgres URL|auto] [--dir PATH] [--case file|smtp|window ...]

Seeds ``--steps`` unpaid invoices whose day-0 email is due (plus their later, not yet
due steps) in a fresh store, then times one ``cloudgreet-billing dunning run`` process,
start-up included:

1. ``file`` backend: steps/s against the target of 2,000; beside it, the same number of
   messages written by the file backend alone (no store), the floor of what a run costs.
2. ``smtp`` backend against a local aiosmtpd: messages/s against the target of 200, and
   the number of SMTP connections the run opened (target: one); beside it, the same
   messages sent by the SMTP adapter alone.
3. ``window``: how long a payment can precede a message that still goes out. A run sends
   ``--window-messages`` day-0 emails through the SMTP adapter to a local aiosmtpd that
   takes ``--latency-ms`` to accept each one (a provider across the internet), while a
   second thread, on its own store connection, pays the next invoice in line a random
   moment into each send (an ``invoice.paid`` event applied as a webhook would, half of
   the time). Printed: the longest time from a payment's commit to the moment a message
   for that invoice was still handed to the SMTP adapter (target: 0, no message after a
   committed payment), and how many such messages there were.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
    # Observed an hour ago, so that a payment event of this second updates the mirror.
    store.upsert_invoices(invoices, now - timedelta(hours=1), now)
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


class SlowSmtp:
    """An SMTP server that takes ``latency`` seconds to accept each message."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.latency)
        self.messages += 1
        return "250 OK"


class HandOffClock:
    """The SMTP adapter, noting when each dunning email is handed to it; ``on_hand_off``
    runs (in another thread) as each one starts on its way."""

    name = "smtp"

    def __init__(self, inner: SmtpEmailSender, on_hand_off: Any) -> None:
        self.inner = inner
        self.on_hand_off = on_hand_off
        self.handed: dict[int, float] = {}

    def send(self, email: OutgoingEmail) -> str | None:
        if email.step_id is not None:
            self.handed[email.step_id] = time.time()
            self.on_hand_off(email.step_id)
        return self.inner.send(email)

    def close(self) -> None:
        self.inner.close()


class LastLook:
    """The store, noting when each step's claim was last confirmed (``confirm_sends``, and
    ``reconfirm_sends`` where the code has it): the moment after which a payment can no
    longer stop its message."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.looked: dict[int, float] = {}

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name not in ("confirm_sends", "reconfirm_sends"):
            return found

        def look(*args: Any, **kwargs: Any) -> Any:
            confirmed = found(*args, **kwargs)
            done = time.time()
            self.looked.update(dict.fromkeys(confirmed, done))
            return confirmed

        return look


def paid_event(invoice_id: str, n: int) -> dict[str, Any]:
    """``invoice.paid`` with the whole invoice, as a webhook delivers it."""
    created = int(time.time())
    return {
        "id": f"evt_1Pay{n:020d}",
        "object": "event",
        "type": "invoice.paid",
        "created": created,
        "livemode": False,
        "data": {
            "object": {
                "id": invoice_id,
                "object": "invoice",
                "customer": "cus_bench",
                "status": "paid",
                "currency": "usd",
                "amount_due": 12345,
                "amount_paid": 12345,
                "amount_remaining": 0,
                "total": 12345,
                "attempt_count": 2,
                "attempted": True,
                # A real creation time: one before 2000 is refused (and quarantined) as
                # out of range, and the payment would then never reach the mirror.
                "created": created - 86_400,
                "status_transitions": {"paid_at": created},
            }
        },
    }


def bench_window(
    messages: int, latency_ms: int, postgres: str | None, where: str | None, seed_value: int
) -> None:
    from aiosmtpd.controller import Controller

    from cloudgreet_billing.adapters.notify.sms_console import ConsoleSmsSender
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings
    from cloudgreet_billing.domain.dunning import DunningConfig
    from cloudgreet_billing.services.dunning.messages import MessageBook
    from cloudgreet_billing.services.dunning.run import Channels, run_dunning
    from cloudgreet_billing.services.sync import apply_events
    from tests.pg_cluster import free_port

    chance = random.Random(seed_value)
    server = SlowSmtp(latency_ms / 1000)
    port = free_port()
    controller = Controller(server, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory(dir=where) as tmp_name:
            url = fresh_database(Path(tmp_name), "window", postgres)
            seed(url, messages)
            settings = load_settings({"BILLING_DATABASE_URL": url})
            store = open_store(settings)
            webhook = open_store(settings)  # the payments' own connection
            order = {
                step.id: step.invoice_id
                for step in store.list_steps(statuses=("scheduled",), limit=None)
                if step.day == 0
            }
            ids = sorted(order)
            paid_at: dict[str, float] = {}
            refused: list[str] = []
            payers: list[threading.Thread] = []

            def pay_next(step_id: int) -> None:
                position = ids.index(step_id)
                if position + 1 >= len(ids) or chance.random() < 0.5:
                    return
                invoice_id = order[ids[position + 1]]
                delay = chance.uniform(0, latency_ms / 1000)

                def pay() -> None:
                    time.sleep(delay)
                    report = apply_events(
                        webhook, [paid_event(invoice_id, position)], source="webhook", now=utcnow()
                    )
                    paid_at[invoice_id] = time.time()
                    if report.events_applied != 1:
                        # A payment that did not apply would measure nothing: say so.
                        refused.append(f"{invoice_id}: {report.failures}")

                payer = threading.Thread(target=pay)
                payers.append(payer)
                payer.start()

            email = HandOffClock(
                SmtpEmailSender(f"smtp://127.0.0.1:{port}", "billing@cloudgreet.test"), pay_next
            )
            spy = LastLook(store)
            started = time.perf_counter()
            summary = run_dunning(
                spy,
                Channels(email=email, sms=ConsoleSmsSender()),
                DunningConfig(),
                MessageBook(),
                actor="bench",
            )
            elapsed = time.perf_counter() - started
            email.close()
            for payer in payers:
                payer.join()
            store.close()
            webhook.close()
    finally:
        controller.stop()
    if refused:
        raise SystemExit(f"payments that did not apply: {refused[:3]}")
    after_payment = [
        email.handed[step_id] - paid_at[order[step_id]]
        for step_id in email.handed
        if order[step_id] in paid_at and email.handed[step_id] > paid_at[order[step_id]]
    ]
    longest = max(after_payment, default=0.0)
    blind = max(email.handed[step_id] - spy.looked[step_id] for step_id in email.handed)
    print(
        f"payment-to-send window ({'postgres' if postgres else 'sqlite'}, smtp at "
        f"{latency_ms} ms a message): {len(paid_at)} invoices paid during a run of "
        f"{summary.due} sends ({summary.sent} sent, {summary.canceled} stopped, "
        f"{elapsed:5.2f} s); {len(after_payment)} message(s) still went out after their "
        f"invoice's payment committed, the longest {longest * 1000:6.1f} ms after it "
        f"(target: none); a message left at most {blind * 1000:6.2f} ms after its last "
        "look at the store"
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
    parser.add_argument(
        "--case",
        action="append",
        choices=("file", "smtp", "window"),
        help="run only these cases (repeatable; default: all)",
    )
    parser.add_argument("--window-messages", type=int, default=60)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11, help="the payments' random seed")
    args = parser.parse_args()
    cases = args.case or ["file", "smtp", "window"]
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
        if "file" in cases:
            bench_file(args.steps, postgres, args.dir)
        if "smtp" in cases:
            bench_smtp(args.steps, postgres, args.dir)
        if "window" in cases:
            bench_window(args.window_messages, args.latency_ms, postgres, args.dir, args.seed)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
