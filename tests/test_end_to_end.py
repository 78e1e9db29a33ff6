"""The installed console script, run as a subprocess the way cron runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION


def console_script() -> str:
    beside_python = Path(sys.executable).parent / "cloudgreet-billing"
    found = str(beside_python) if beside_python.exists() else shutil.which("cloudgreet-billing")
    assert found, "the cloudgreet-billing console script is not installed (pip install -e .)"
    return found


def invoke(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_cron_style_run_of_the_installed_script(backend, tmp_path, request):
    url = (
        f"sqlite:///{tmp_path}/e2e.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    (tmp_path / ".env").write_text(f"BILLING_DATABASE_URL={url}\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    migrated = invoke("db", "migrate", "--json", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["data"]["schema_version"] == LATEST_SCHEMA_VERSION

    csv = tmp_path / "usage.csv"
    csv.write_text(
        "customer_id,kind,amount,currency,occurred_at,external_id\n"
        "cus_A,booking_fee,2.50,usd,2026-11-20,a\ncus_A,booking_fee,2.50,usd,2026-11-21,b\n"
    )
    imported = invoke("ledger", "import", str(csv), "--json", env=env, cwd=tmp_path)
    assert json.loads(imported.stdout)["data"]["inserted"] == 2

    listed = invoke("ledger", "list", "--json", env=env, cwd=tmp_path)
    assert [row["external_id"] for row in json.loads(listed.stdout)["data"]] == ["b", "a"]

    bad = invoke(
        "ledger",
        "add",
        "--customer",
        "cus_A",
        "--kind",
        "booking_fee",
        "--amount",
        "1.001",
        env=env,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: amount '1.001'")


def test_python_dash_m_works_too(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cloudgreet_billing", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("cloudgreet-billing ")
