"""The export streams: exporting 200,000 ledger rows never holds them in memory at once."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

from cloudgreet_billing.domain.ledger import LedgerDraft
from cloudgreet_billing.domain.ledger_batch import batches_of
from cloudgreet_billing.domain.reconciliation import Window
from cloudgreet_billing.services import export as export_service
from tests.finance.factories import NOW


def test_export_runs_in_constant_memory(store, tmp_path):
    total = 200_000
    start = NOW - timedelta(days=6)
    step = timedelta(days=5) / total
    store.import_ledger(
        batches_of(
            LedgerDraft(
                customer_id=f"cus_{n % 997}",
                kind="booking_fee",
                amount=n % 10_000,
                currency="usd",
                occurred_at=start + n * step,
                description=f"booking batch {n}",
                external_id=f"ext-{n}",
            )
            for n in range(total)
        ),
        NOW,
    )
    window = Window(start=NOW - timedelta(days=7), end=NOW)
    target = tmp_path / "big.csv"
    tracemalloc.start()
    try:
        rows = export_service.write_file_atomically(
            export_service.export_chunks(store, "ledger", window, now=NOW), target
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == total
    size = target.stat().st_size
    assert size > 20_000_000  # the whole export, about 110 bytes a row …
    assert peak < 8_000_000  # … never held in memory at once
