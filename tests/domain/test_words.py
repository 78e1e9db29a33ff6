"""Counted nouns in human output: "1 invoice", never "1 invoices" or "invoice(s)"."""

from __future__ import annotations

import pytest

from cloudgreet_billing.domain.words import plural


@pytest.mark.parametrize(
    ("count", "noun", "irregular", "shown"),
    [
        (0, "invoice", None, "0 invoices"),
        (1, "invoice", None, "1 invoice"),
        (2, "step", None, "2 steps"),
        (1234, "row", None, "1,234 rows"),
        (1, "mismatch", "mismatches", "1 mismatch"),
        (3, "mismatch", "mismatches", "3 mismatches"),
    ],
)
def test_plural(count: int, noun: str, irregular: str | None, shown: str) -> None:
    assert plural(count, noun, irregular) == shown
