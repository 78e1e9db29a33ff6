"""The wheel users install carries the SQL migrations inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_migrations_schema_and_templates(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("cloudgreet_billing-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cloudgreet_billing/migrations/CREATE_BILLING_INFRASTRUCTURE.sql" in names
    assert "cloudgreet_billing/adapters/store/sqlite_schema.sql" in names
    for template in ("day0_email", "day1_sms", "day3_email"):
        assert f"cloudgreet_billing/templates/dunning/{template}.txt" in names
    assert any(name.endswith("entry_points.txt") for name in names)
