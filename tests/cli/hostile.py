"""A seeded store and the check every refusal of hostile input must pass.

A refusal is exit 2, exactly one line on stderr (``error: …``, short), no traceback and
no "unexpected", and every billing table keeps its row count.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.cli.helpers import run
from tests.dunning.stripe_objects import (
    CUSTOMER_ID,
    INVOICE_ID,
    customer_object,
    event,
    invoice_object,
    ndjson,
)

#: Every command whose ID argument is a number (an alert, a step, a quarantined event),
#: as typed before the id; ``test_every_id_argument_is_in_the_hostile_lists`` keeps it
#: complete. The id goes last, after ``--``.
NUMBER_ID_COMMANDS: list[list[str]] = [
    ["alerts", "show"],
    ["alerts", "ack"],
    ["alerts", "resolve"],
    ["dunning", "mark-sent"],
    ["dunning", "requeue"],
    ["dunning", "unmark-sent"],
    ["dunning", "preview"],
    ["retry", "--dry-run"],
    ["resend-link", "--dry-run"],
    ["portal", "--dry-run"],
    ["quarantine", "show"],
    ["quarantine", "dismiss", "--yes"],
    ["quarantine", "retry"],
]
#: Of those, the commands that also take a Stripe id (``in_…``, ``cus_…``).
STRIPE_ID_COMMANDS: list[list[str]] = [
    ["retry", "--dry-run"],
    ["resend-link", "--dry-run"],
    ["portal", "--dry-run"],
]
#: Commands whose id is followed by more arguments (``alerts note ID TEXT``), tested on
#: their own.
OTHER_ID_COMMANDS: list[list[str]] = [["alerts", "note"]]
#: Commands whose ID argument is a customer id alone (``dunning exempt cus_…``), with the
#: options they need besides; the id goes last, after ``--``.
CUSTOMER_ID_COMMANDS: list[list[str]] = [
    ["dunning", "exempt", "--reason", "payment plan", "--yes"],
    ["dunning", "unexempt", "--yes"],
]


FINALIZED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
#: The longest line a refusal may print: a bad value is quoted shortened, never whole.
MAX_LINE = 400


def seed(tmp_path: Path) -> None:
    """A failed invoice (mirror, alert, dunning steps, event) and a ledger entry."""
    events = tmp_path / "seed-events.ndjson"
    failed = invoice_object(finalized_at=FINALIZED)
    events.write_text(
        ndjson(
            event("evt_1QpL9aLkdIwHu7ixQ2w3E4r5", "customer.updated", customer_object(), FINALIZED),
            event("evt_1QpL9bLkdIwHu7ixT6y7U8i9", "invoice.payment_failed", failed, FINALIZED),
        ),
        encoding="utf-8",
    )
    synced = run("sync", "--events-file", str(events), "--json")
    assert synced.exit_code == 0, synced.stdout + synced.stderr
    added = run(
        "ledger",
        "add",
        f"--customer={CUSTOMER_ID}",
        "--kind=booking_fee",
        "--amount=2.50",
        "--occurred-at=2026-11-20T10:00:00Z",
        f"--invoice={INVOICE_ID}",
        "--external-id=booking-4711",
        "--json",
    )
    assert added.exit_code == 0, added.stdout + added.stderr


def row_counts() -> dict[str, int]:
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings

    store = open_store(load_settings())
    try:
        return store.row_counts()
    finally:
        store.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, seeded store on each backend, made once per test module: every test
    that uses it only checks refusals, which leave it as it is."""
    from cloudgreet_billing.bootstrap import open_store
    from cloudgreet_billing.config import load_settings, variables

    base = tmp_path_factory.mktemp("seeded")
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{base}/billing.db"
    else:
        import psycopg

        server: str = request.getfixturevalue("postgres_server")
        database = f"billing_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        url = f"{server.rpartition('/')[0]}/{database}"
    with pytest.MonkeyPatch.context() as patch:
        for name in variables():
            patch.delenv(name, raising=False)
        patch.setenv("BILLING_DATABASE_URL", url)
        patch.setenv("BILLING_ACTOR", "tester@ci")
        patch.setenv("XDG_DATA_HOME", str(base / "data-home"))
        patch.chdir(base)
        store = open_store(load_settings(), check_schema=False)
        store.migrate()
        store.close()
        seed(base)
    yield url
    if database is not None:
        import psycopg

        with psycopg.connect(request.getfixturevalue("postgres_server"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def hostile_seeded(seeded_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """The seeded store on each backend; yields its row counts, checked again at the end."""
    monkeypatch.setenv("BILLING_DATABASE_URL", seeded_url)
    before = row_counts()
    assert before["billing_alerts"] == 1 and before["billing_usage_ledger"] == 1, before
    yield before
    assert row_counts() == before


def assert_refused(result: Result, *needles: str) -> str:
    """Exit 2, one short ``error:`` line on stderr naming ``needles``; returns the line."""
    lines = result.stderr.splitlines()
    shown = f"exit {result.exit_code}\nstdout: {result.stdout[:500]}\nstderr: {result.stderr[:500]}"
    assert result.exit_code == 2, shown
    assert len(lines) == 1, shown
    line = lines[0]
    assert line.startswith("error: "), shown
    assert len(line) <= MAX_LINE, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert "unexpected" not in line, shown
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def refused(args: Sequence[str], *needles: str, input: str | None = None) -> str:
    """Run ``args`` and check the refusal names every one of ``needles``."""
    return assert_refused(run(*args, input=input), *needles)


def json_refusal(result: Result) -> dict[str, Any]:
    """``--json``: exit 2, one JSON line on stdout, nothing on stderr."""
    assert result.exit_code == 2, (result.exit_code, result.stdout[:500], result.stderr[:500])
    assert result.stderr == "", result.stderr[:500]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout[:500]
    error: dict[str, Any] = json.loads(lines[0])["error"]
    return error
