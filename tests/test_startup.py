"""Start-up stays lean: help and local commands never import the network SDKs or drivers."""

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
"""


def imported_heavy_modules(*args: str, env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    marker = [line for line in result.stderr.splitlines() if line.startswith("HEAVY=")]
    assert marker, result.stderr
    return json.loads(marker[0].removeprefix("HEAVY="))


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
