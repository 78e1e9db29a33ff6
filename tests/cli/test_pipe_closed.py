"""A listing piped into ``head`` stops quietly when the reader goes away, as Unix tools do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.test_end_to_end import console_script, invoke


def test_a_listing_cut_short_by_head_exits_0_with_no_error(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path}/billing.db",
    }
    assert invoke("db", "migrate", env=env, cwd=tmp_path).returncode == 0
    csv = tmp_path / "usage.csv"
    rows = "".join(
        f"cus_Qf3kZ8aB1cD2eF3gH4iJ5kL,booking_fee,2.50,usd,2026-11-20T10:00:00Z,"
        f"in_1QpL8HLkdIwHu7ixl4OzzPMv,booking {n},ext-{n}\n"
        for n in range(3000)
    )
    csv.write_text(
        "customer_id,kind,amount,currency,occurred_at,invoice_id,description,external_id\n" + rows
    )
    assert invoke("ledger", "import", str(csv), env=env, cwd=tmp_path).returncode == 0

    # Far more than a pipe buffers, so the writer is still writing when the reader leaves.
    lister = subprocess.Popen(
        [console_script(), "ledger", "list", "--limit", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert lister.stdout is not None and lister.stderr is not None
    header = lister.stdout.readline()
    lister.stdout.close()
    code = lister.wait(timeout=60)
    stderr = lister.stderr.read().decode()
    assert header.decode().startswith("id\toccurred\tcustomer\tkind\tamount")
    assert code == 0, stderr
    assert "error" not in stderr and "Traceback" not in stderr
