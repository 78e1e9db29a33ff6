"""How ``dunning report`` writes times to recover and rates for people."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from cloudgreet_billing.cli.dunning_report import duration, pct_text


@pytest.mark.parametrize(
    ("span", "shown"),
    [
        (timedelta(seconds=59), "<1m"),
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=2), "2h"),
        (timedelta(hours=2, minutes=5, seconds=59), "2h 5m"),
        (timedelta(days=1, hours=4, minutes=30), "1d 4h"),  # the two largest units
        (timedelta(days=3, minutes=7), "3d"),  # no "0h": a unit that is zero is left out
        (timedelta(days=45), "45d"),
        (None, ""),
    ],
)
def test_times_to_recover_are_written_in_the_units_of_relative_times(span, shown):
    assert duration(span) == shown


def test_rates_are_shown_with_two_places_rounded_half_up():
    # Decimal's own format would round half to even (29.66); reports round half up.
    assert pct_text(Decimal("29.6650")) == "29.67%"
    assert pct_text(Decimal("100.0000")) == "100.00%"
    assert pct_text(None) == ""
