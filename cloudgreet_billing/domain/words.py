"""Counted nouns that read right: ``1 invoice``, ``2 invoices``, ``1,234 rows``."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless the count is one."""
    word = noun if count == 1 else plural_form or f"{noun}s"
    return f"{count:,} {word}"
