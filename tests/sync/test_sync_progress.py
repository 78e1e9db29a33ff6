"""A paged sync from the Events API says how far it is: the share of its window the pages
reach back over (Stripe lists newest first), then the events applied out of those read."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from cloudgreet_billing.adapters.stripe import StripeGateway
from cloudgreet_billing.services.sync import sync_events
from tests.cli.terminal import run_on_a_terminal
from tests.stripe_fake import FakeStripe
from tests.sync.conftest import T0, failed

NOW = datetime.fromtimestamp(T0, UTC)


def invoice_id(n: int) -> str:
    return f"in_1QpL8HLkdIwHu7ixl4O{n:05d}"


def test_each_page_reports_the_share_of_the_window_it_reaches(fake: FakeStripe, store) -> None:
    # 250 events, one an hour up to now; the cursor is 20 days back: pages of 100 reach
    # back 99 hours, then 199, then 249.
    fake.paginate(
        "/v1/events",
        [
            failed(f"evt_1QpL8HLkdIwHu7ix{n:06d}", invoice_id(n), 1, T0 - n * 3600)
            for n in range(250)
        ],
    )
    heard: list[tuple[int, float]] = []
    applied: list[int] = []

    report = sync_events(
        store,
        StripeGateway(fake.api_key, api_base=fake.url),
        now=NOW,
        actor="tester@ci",
        since=NOW - timedelta(days=20),
        progress=applied.append,
        listing=lambda read, share: heard.append((read, round(share, 4))),
    )

    window = 20 * 24
    assert heard == [(100, round(99 / window, 4)), (200, round(199 / window, 4)),
                     (250, round(249 / window, 4))]  # fmt: skip
    assert sum(applied) == 250 == report.events_seen


def test_without_a_cursor_the_window_is_stripes_30_days(fake: FakeStripe, store) -> None:
    fake.paginate(
        "/v1/events", [failed("evt_1QpL8HLkdIwHu7ix000001", invoice_id(1), 1, T0 - 36 * 3600)]
    )
    heard: list[tuple[int, float]] = []
    sync_events(
        store,
        StripeGateway(fake.api_key, api_base=fake.url),
        now=NOW,
        actor="tester@ci",
        listing=lambda read, share: heard.append((read, round(share, 4))),
    )
    assert heard == [(1, round(36 / (30 * 24), 4))]


def test_a_paged_sync_on_a_terminal_shows_both_bars(fake: FakeStripe, tmp_path) -> None:
    now = int(time.time())
    fake.paginate(
        "/v1/events",
        [
            failed(f"evt_1QpL8HLkdIwHu7ix{n:06d}", invoice_id(n), 1, now - n * 600)
            for n in range(250)
        ],
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path}/billing.db",
        "STRIPE_SECRET_KEY": fake.api_key,
        "STRIPE_API_BASE": fake.url,
    }
    assert run_on_a_terminal("db", "migrate", env=env, cwd=tmp_path).returncode == 0

    shown = run_on_a_terminal("sync", env=env, cwd=tmp_path)

    assert shown.returncode == 0, shown.terminal
    lines = shown.terminal.splitlines()
    reading = [line for line in lines if line.startswith("reading Stripe events")]
    applying = [line for line in lines if line.startswith("applying events")]
    assert any(re.search(r"100% 250 events ETA", line) for line in reading), reading
    assert any(re.search(r"100% 250 of 250 ETA", line) for line in applying), applying
    assert all(len(line.rstrip()) <= 80 for line in reading + applying)
