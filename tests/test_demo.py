"""``demo`` walks the whole checklist on its own workspace, never on the user's setup."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

from tests.cli.helpers import data, run

SCRIPT = Path(sys.executable).absolute().with_name("cloudgreet-billing")
LIVE_KEY = "sk_live_51QpL8HLkdIwHu7ixDEMOdemoDEMO3141"


def test_demo_walks_the_checklist_in_its_own_workspace(tmp_path, monkeypatch):
    # A real-looking environment that the demo must ignore.
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://prod:secret@127.0.0.1:1/prod")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_0123456789abcdefghij")
    workspace = tmp_path / "demo"
    report = data(run("demo", "--dir", str(workspace), "--json"))

    codes = {
        shlex.join(shlex.split(step["command"])[1:]): step["exit_code"] for step in report["steps"]
    }
    assert codes["db migrate"] == 0
    assert {"retry in_Demo0002 --dry-run", "resend-link in_Demo0003 --dry-run"} <= set(codes)
    assert "portal cus_DemoPhysioBerlin --send --dry-run" in codes
    assert codes["reconcile --offline"] == 4, "the planted variance must be flagged"
    assert all(code == 0 for command, code in codes.items() if command != "reconcile --offline")

    emails = sorted((workspace / "outbox").glob("*.eml"))
    assert len(emails) == 3, "a day-3 email, a day-0 email and the finance-lead escalation"
    assert not any("billing_portal" in p.read_text() for p in emails), "portal was a dry run"
    to_customers = [p.read_text() for p in emails if "-email-step" in p.name]
    assert len(to_customers) == 2
    assert all("https://invoice.stripe.com/i/demo/in_Demo" in body for body in to_customers)
    assert any("finance-lead@cloudgreet.example" in p.read_text() for p in emails)

    with (workspace / "ledger-last-7-days.csv").open(newline="") as export:
        rows = list(csv.DictReader(export))
    assert rows and {row["currency"] for row in rows} <= {"usd", "eur"}

    env_file = str(workspace / ".env")
    monkeypatch.delenv("BILLING_DATABASE_URL")
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    alerts = data(run("--env-file", env_file, "alerts", "list", "--json"))
    assert sorted(alert["type"] for alert in alerts) == [
        "dunning_exhausted",
        "invoice_failed",
        "invoice_failed",
        "payment_action_required",
        "threshold_exceeded",
    ]
    board = data(run("--env-file", env_file, "dashboard", "--json"))
    assert board["mrr"] == {"usd": 75037, "eur": 19900}
    assert json.loads(json.dumps(board["open_alerts"]))["invoice_failed"] == 2

    # Back in a shell with a LIVE key: every command in the workspace says so, once.
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
    monkeypatch.chdir(workspace)  # the workspace's .env, read by default
    result = run("alerts", "list", "--json")
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "LIVE" in line] == [
        "warning: STRIPE_SECRET_KEY from the environment is a LIVE key (sk_live_…3141) and "
        "wins over .env (empty): Stripe calls here reach the live account "
        "(unset STRIPE_SECRET_KEY to use the file's setting)"
    ]
    assert LIVE_KEY not in result.stderr


def demo_script(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The README's demo command: the venv's script, which is not on PATH."""
    return subprocess.run(
        [str(SCRIPT), "demo", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )


def plain_shell(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A login shell's environment after a fresh clone: the venv is not on PATH."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", **extra}


def carry_on_lines(stdout: str) -> list[str]:
    head = "Carry on there; each line runs as printed:\n"
    assert head in stdout, stdout
    return [line.strip() for line in stdout.split(head, 1)[1].splitlines() if line.strip()]


def test_the_readme_demo_shows_the_dry_runs_and_its_closing_lines_run_as_printed(tmp_path):
    workspace = tmp_path / "demo"
    shell = plain_shell(tmp_path, STRIPE_SECRET_KEY=LIVE_KEY)
    result = demo_script("--dir", str(workspace), env=shell, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    # The walk's commands, as typed in the workspace with the venv active.
    assert result.stderr.startswith(
        "Every step runs in the workspace, as you would type it there:\n"
        f"$ source {SCRIPT.with_name('activate')}\n"
        f"$ cd {workspace}\n"
    )
    # The operator actions, each a dry run that needs no key (the shell's is left out).
    assert "$ cloudgreet-billing retry in_Demo0002 --dry-run\n" in result.stderr
    assert "$ cloudgreet-billing resend-link in_Demo0003 --dry-run\n" in result.stderr
    assert "$ cloudgreet-billing portal cus_DemoPhysioBerlin --send --dry-run\n" in result.stderr
    for request in (
        "POST /v1/invoices/in_Demo0002/pay",
        "POST /v1/invoices/in_Demo0003/send",
        "POST /v1/billing_portal/sessions",
    ):
        assert f"  {request}\n" in result.stdout
    no_key = "key: none (STRIPE_SECRET_KEY is not set; a real run needs one)"
    assert result.stdout.count(no_key) == 3
    assert "would charge $248.00 for invoice in_Demo0002" in result.stdout
    assert "then email it to praxis@physio-berlin.example" in result.stdout

    # A LIVE key in the shell does not go unnoticed: the demo warns, and unsets it first.
    assert "warning: your shell sets STRIPE_SECRET_KEY (a LIVE key, sk_live_…3141).\n" in (
        result.stderr
    )
    lines = carry_on_lines(result.stdout)
    assert lines[:3] == [
        "unset STRIPE_SECRET_KEY",
        f"source {SCRIPT.with_name('activate')}",
        f"cd {workspace}",
    ]
    assert lines[3] == "cloudgreet-billing alerts show 1"
    ran = subprocess.run(
        ["bash", "-c", "set -e\n" + "\n".join(lines[:-1]) + "\n" + lines[-1]],
        capture_output=True,
        text=True,
        env=shell,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    # Every line ran (set -e); the last, the mismatched customer's trace, exits 4 as
    # reconcile does for a variance.
    assert ran.returncode == 4, ran.stderr
    assert "in_Demo0002" in ran.stdout
    assert "cus_DemoPawsVet" in ran.stdout
    assert "LIVE" not in ran.stderr, "the printed lines unset the key before anything runs"


def test_on_path_the_closing_lines_name_the_command_alone(tmp_path):
    shell = plain_shell(tmp_path, PATH=f"{SCRIPT.parent}:/usr/bin:/bin")
    result = demo_script("--dir", str(tmp_path / "demo"), "--json", env=shell, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["data"]
    assert report["carry_on"][0] == f"cd {tmp_path / 'demo'}"
    assert report["carry_on"][1] == "cloudgreet-billing alerts show 1"
    assert report["steps"][0]["command"] == "cloudgreet-billing db migrate"
    assert report["shell_overrides"] == []
