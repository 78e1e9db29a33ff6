"""Start-up stays lean: help and local commands never import the network SDKs or drivers,
and a command loads only its own area (the start-up benchmark is bench_foundation.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("stripe", "supabase", "psycopg")

PROBE = """
import json, sys
from cloudgreet_billing.cli import main
sys.argv = ["cloudgreet-billing", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"stripe", "supabase", "psycopg"})
sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
sys.stderr.write("PYDANTIC=" + json.dumps("pydantic" in sys.modules) + "\\n")
ours = sorted(name for name in sys.modules if name.startswith("cloudgreet_billing."))
sys.stderr.write("OURS=" + json.dumps(ours) + "\\n")
"""
# What the ledger commands must not pay for at start-up: other areas' records and (except
# for ``--help``, which reads every command's help text) their commands.
OTHER_AREA_COMMANDS = {
    "cloudgreet_billing.cli.actions",
    "cloudgreet_billing.cli.alerts",
    "cloudgreet_billing.cli.dunning",
    "cloudgreet_billing.cli.finance",
    "cloudgreet_billing.cli.sync",
}
OTHER_AREA_RECORDS = {
    "cloudgreet_billing.domain.alerts",
    "cloudgreet_billing.domain.dunning",
    "cloudgreet_billing.domain.events",
    "cloudgreet_billing.domain.mirror",
    "cloudgreet_billing.domain.mrr",
    "cloudgreet_billing.domain.reconciliation",
    "cloudgreet_billing.adapters.store.protocol",
}


def probe(*args: str, env: dict[str, str], marker: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{marker}=")]
    assert lines, result.stderr
    return json.loads(lines[0].removeprefix(f"{marker}="))


def imported_heavy_modules(*args: str, env: dict[str, str]) -> list[str]:
    return probe(*args, env=env, marker="HEAVY")


def our_modules(*args: str, env: dict[str, str]) -> set[str]:
    return set(probe(*args, env=env, marker="OURS"))


@pytest.mark.parametrize(
    "args",
    [("--help",), ("ledger", "--help"), ("ledger", "list", "--json"), ("db", "status", "--json")],
)
def test_local_commands_import_no_network_sdk(args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    assert imported_heavy_modules(*args, env=env) == []


def test_the_probe_would_see_psycopg_when_postgres_is_used(tmp_path):
    # Proves the probe above can fail: a Postgres URL must pull psycopg in.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BILLING_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    assert "psycopg" in imported_heavy_modules("ledger", "list", "--json", env=env)


def test_ledger_list_loads_no_other_area(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    loaded = our_modules("ledger", "list", "--json", env=env)
    assert loaded & (OTHER_AREA_COMMANDS | OTHER_AREA_RECORDS) == set()


def test_help_loads_no_area_records(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    assert our_modules("--help", env=env) & OTHER_AREA_RECORDS == set()


def test_the_probe_would_see_another_area_loaded(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    loaded = our_modules("dunning", "list", "--json", env=env)
    assert {"cloudgreet_billing.cli.dunning", "cloudgreet_billing.domain.dunning"} <= loaded


def test_the_command_list_shows_each_commands_own_help():
    # ``--help`` lists commands from their help text without building them; the text it
    # uses must be the one the built command shows.
    from cloudgreet_billing.cli import COMMANDS, build_command, command_help

    for name in COMMANDS:
        assert command_help(name) == build_command(name).help, name


def _events_file(tmp_path, event_type: str, obj: dict[str, object]) -> str:
    from tests.sync.conftest import T0, event

    path = tmp_path / "events.ndjson"
    path.write_text(json.dumps(event("evt_1QpL8ILkdIwHu7ixSt4rTu9p", event_type, obj, T0)) + "\n")
    return str(path)


def _keyed_env(tmp_path) -> dict[str, str]:
    """A Stripe key is set (as in a production .env), at a Stripe that never answers."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
        "STRIPE_SECRET_KEY": "sk_test_51QpL7xLkdIwHu7ixStartupProbe00",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
    }


def test_a_file_of_events_that_need_no_stripe_imports_no_stripe_even_with_a_key(tmp_path):
    from tests.sync.conftest import full_invoice

    events = _events_file(tmp_path, "invoice.paid", full_invoice(status="paid"))
    assert imported_heavy_modules("sync", "--events-file", events, env=_keyed_env(tmp_path)) == []


def test_the_probe_would_see_stripe_for_an_event_that_needs_it(tmp_path):
    # A PaymentIntent's failure names no invoice from basil on: Stripe must be asked.
    intent = {
        "id": "pi_3QpL8ILkdIwHu7ix1AbCdEfG",
        "object": "payment_intent",
        "last_payment_error": {"code": "card_declined", "decline_code": "stolen_card"},
    }
    events = _events_file(tmp_path, "payment_intent.payment_failed", intent)
    heavy = imported_heavy_modules("sync", "--events-file", events, env=_keyed_env(tmp_path))
    assert "stripe" in heavy


# Typer converts values through Pydantic; plain ones are converted without it
# (``cli.quick_params``), which saves a third of a command's start-up.
@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("ledger", "list", "--json", "--limit", "5"),
        ("dunning", "list", "--status", "scheduled"),
        ("alerts", "list", "--json"),
        ("--env-file", "{env}", "dashboard", "--json"),
        ("sync", "--events-file", "{events}", "--json"),
    ],
)
def test_plain_values_need_no_pydantic(args, tmp_path):
    from tests.sync.conftest import full_invoice

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    (tmp_path / "prod.env").write_text("# nothing is set here\n")
    events = _events_file(tmp_path, "invoice.paid", full_invoice(status="paid"))
    filled = [a.format(env=tmp_path / "prod.env", events=events) for a in args]
    assert probe(*filled, env=env, marker="PYDANTIC") is False


def test_the_probe_would_see_pydantic_for_a_value_typer_converts(tmp_path):
    # A path Python spells differently (``./``) goes to Typer's own converter, as does
    # a number with limits (``serve --port``).
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    (tmp_path / "prod.env").write_text("# nothing is set here\n")
    assert probe("--env-file", f"{tmp_path}/./prod.env", "db", "status", env=env, marker="PYDANTIC")
    assert probe("serve", "--port", "70000", env=env, marker="PYDANTIC")
