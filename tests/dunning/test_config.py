"""BILLING_CONFIG's [dunning] table, the step rules, and the doctor's dunning checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudgreet_billing.cli import app
from cloudgreet_billing.domain.dunning import (
    DEFAULT_TIMELINE,
    ClaimedStep,
    Decision,
    DunningStep,
    InvoiceFacts,
    TimelineStep,
    decide,
    load_dunning_config,
)
from cloudgreet_billing.errors import ConfigError
from tests.dunning.conftest import schedule, seed_invoice


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "billing.toml"
    path.write_text(text)
    return path


def test_no_config_means_the_default_timeline() -> None:
    config = load_dunning_config(None)
    assert config.timeline == DEFAULT_TIMELINE
    assert [(s.day, s.channel) for s in config.timeline] == [(0, "email"), (1, "sms"), (3, "email")]
    assert (config.escalate_after, config.lease) == (3, timedelta(minutes=10))


def test_a_config_redefines_steps_count_lease_and_templates(tmp_path: Path) -> None:
    (tmp_path / "copy").mkdir()
    config = load_dunning_config(
        write(
            tmp_path,
            """
[dunning]
escalate_after = 2
lease_minutes = 30
templates_dir = "copy"

[[dunning.steps]]
day = 5
channel = "sms"
template = "late_sms"

[[dunning.steps]]
day = 0
channel = "email"
template = "first_email"
""",
        )
    )
    assert config.timeline == (
        TimelineStep(0, "email", "first_email"),
        TimelineStep(5, "sms", "late_sms"),
    )
    assert (config.escalate_after, config.lease) == (2, timedelta(minutes=30))
    assert config.templates_dir == (tmp_path / "copy").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dunning]\nescalate_after = 0\n", "escalate_after must be a whole number of at least 1"),
        ("[dunning]\nretries = 2\n", "unknown keys: retries"),
        ("[dunning]\nsteps = []\n", "steps must be a non-empty array"),
        ('[[dunning.steps]]\nday = -1\nchannel = "sms"\ntemplate = "x"\n', "day must be"),
        ('[[dunning.steps]]\nday = 1\nchannel = "fax"\ntemplate = "x"\n', "channel must be"),
        ('[[dunning.steps]]\nday = 1\nchannel = "sms"\ntemplate = "../x"\n', "template must be"),
        (
            '[[dunning.steps]]\nday = 1\nchannel = "sms"\ntemplate = "a"\n'
            '[[dunning.steps]]\nday = 1\nchannel = "sms"\ntemplate = "b"\n',
            "two steps on the same day and channel",
        ),
        ('[dunning]\ntemplates_dir = "nowhere"\n', "is not a folder"),
        ("[dunning\n", "is not valid TOML"),
    ],
)
def test_a_bad_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_dunning_config(write(tmp_path, text))


def claimed(
    *,
    status: str | None = "open",
    phone: str | None = "+1555",
    email: str | None = "ada@example.com",
    superseded: bool = False,
    deleted: bool = False,
    channels: frozenset[str] = frozenset({"email", "sms"}),
) -> ClaimedStep:
    step = DunningStep(
        id=1,
        invoice_id="in_1",
        customer_id="cus_1",
        alert_id=None,
        day=1,
        channel="sms",
        template="day1_sms",
        status="sending",
        due_at=datetime(2026, 3, 3, tzinfo=UTC),
        sent_at=None,
        attempts=0,
        last_error=None,
    )
    invoice = InvoiceFacts(
        "in_1", "cus_1", status=status, phone=phone, email=email, customer_deleted=deleted
    )
    return ClaimedStep(step, invoice, superseded, channels)


@pytest.mark.parametrize(
    ("item", "decision"),
    [
        (claimed(), Decision("send")),
        (claimed(status="void"), Decision("cancel", "invoice is void")),
        (claimed(status="paid", superseded=True), Decision("cancel", "invoice is paid")),
        (claimed(superseded=True), Decision("skip", "superseded")),
        # The email steps reach the customer: this SMS is not needed.
        (claimed(phone=None), Decision("skip", "customer cus_1 has no phone number")),
        (
            claimed(phone=None, email=None),
            Decision(
                "undeliverable",
                "customer cus_1 has no email address or phone number",
            ),
        ),
        # An SMS-only timeline cannot use the email address.
        (
            claimed(phone=None, channels=frozenset({"sms"})),
            Decision("undeliverable", "customer cus_1 has no phone number"),
        ),
        (
            claimed(deleted=True),
            Decision("undeliverable", "customer cus_1 was deleted in Stripe"),
        ),
        (
            claimed(status=None),
            Decision("fail", "invoice in_1 is not in the local mirror (run sync)"),
        ),
    ],
)
def test_what_a_run_does_with_a_due_step(item: ClaimedStep, decision: Decision) -> None:
    assert decide(item) == decision


def doctor_checks() -> dict[str, Any]:
    result = CliRunner().invoke(app, ["doctor", "--json"], catch_exceptions=False)
    return {c["name"]: c for c in json.loads(result.stdout)["data"]["checks"]}


def test_doctor_reports_dunning_ready(store: Any) -> None:
    checks = doctor_checks()
    assert checks["dunning templates"]["status"] == "ok"
    assert checks["dunning templates"]["detail"] == (
        "day 0 email, day 1 sms, day 3 email; escalate after 3 steps"
    )
    assert checks["dunning"] == {
        "name": "dunning",
        "status": "ok",
        "detail": "running; 0 steps due now",
    }
    assert checks["escalation"]["status"] == "not_configured"


def test_doctor_fails_on_a_template_naming_an_unknown_value(
    store_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "day1_sms.txt").write_text("Pay {{ amount_owed }} now")
    monkeypatch.setenv(
        "BILLING_CONFIG", str(write(tmp_path, '[dunning]\ntemplates_dir = "copy"\n'))
    )
    check = doctor_checks()["dunning templates"]
    assert check == {
        "name": "dunning templates",
        "status": "fail",
        "detail": "template 'day1_sms': 'amount_owed' is undefined",
    }


def test_doctor_warns_while_paused_and_about_steps_needing_review(store: Any) -> None:
    from cloudgreet_billing.services.dunning.operator import pause

    seed_invoice(store)
    schedule(store)
    now = datetime(2026, 3, 2, 10, tzinfo=UTC)
    store.claim_due_steps(now=now, lease_until=now, run_id="dead", limit=1)
    store.expire_leases(now + timedelta(seconds=1))
    assert doctor_checks()["dunning"]["detail"] == (
        "1 step needs review and 0 failed (see: dunning list)"
    )
    pause(store, reason="Stripe outage", actor="oncall@ci", now=now)
    assert doctor_checks()["dunning"] == {
        "name": "dunning",
        "status": "warn",
        "detail": "paused by oncall@ci at 2026-03-02T10:00:00Z: Stripe outage",
    }
