from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudgreet_billing.domain.money import (
    MAX_MINOR_UNITS,
    format_money,
    parse_currency,
    to_major_string,
    to_minor_units,
    to_minor_units_each,
)
from cloudgreet_billing.errors import BadInput


@pytest.mark.parametrize(
    ("raw", "currency", "minor"),
    [
        ("12.34", "usd", 1234),
        ("12.3", "usd", 1230),
        ("12", "usd", 1200),
        ("0.01", "usd", 1),
        ("-0.01", "usd", -1),
        ("+7", "eur", 700),
        ("500", "jpy", 500),
        ("1.234", "kwd", 1234),
        ("12.340", "usd", 1234),
        (" 3.00 ", "gbp", 300),
    ],
)
def test_to_minor_units(raw, currency, minor):
    assert to_minor_units(raw, currency) == minor


@pytest.mark.parametrize(
    ("raw", "currency"),
    [
        ("12.345", "usd"),
        ("5.5", "jpy"),
        ("1.2345", "kwd"),
        ("", "usd"),
        ("1e2", "usd"),
        ("0x10", "usd"),
        ("Infinity", "usd"),
        ("1,000", "usd"),
        ("١٢", "usd"),
    ],
)
def test_to_minor_units_rejects(raw, currency):
    with pytest.raises(BadInput):
        to_minor_units(raw, currency)


def test_amount_bounds():
    assert to_minor_units(str(MAX_MINOR_UNITS), "jpy") == MAX_MINOR_UNITS
    with pytest.raises(BadInput):
        to_minor_units(str(MAX_MINOR_UNITS + 1), "jpy")


@given(
    st.integers(min_value=-MAX_MINOR_UNITS, max_value=MAX_MINOR_UNITS),
    st.sampled_from(["usd", "jpy", "kwd", "eur"]),
)
def test_major_string_round_trips(amount, currency):
    assert to_minor_units(to_major_string(amount, currency), currency) == amount


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_parsing_agrees_with_decimal_arithmetic(value: Decimal):
    assert to_minor_units(f"{value:f}", "usd") == int(value * 100)


def test_currency():
    assert parse_currency("USD") == "usd"
    for bad in ("us", "usdd", "u$d", "12a"):
        with pytest.raises(BadInput):
            parse_currency(bad)


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (12345, "usd", "$123.45"),
        (-500, "eur", "-€5.00"),
        (500, "jpy", "¥500"),
        (1234, "kwd", "1.234 KWD"),
        (129900000, "usd", "$1,299,000.00"),
        (5, "chf", "0.05 CHF"),
    ],
)
def test_format_money(amount, currency, shown):
    assert format_money(amount, currency) == shown


amount_texts = st.one_of(
    st.decimals(min_value=-(10**14), max_value=10**14, places=3, allow_nan=False).map(str),
    st.integers(-(10**16), 10**16).map(str),
    st.sampled_from(["12.3", "-0", "007.10", "1e3", "", " 7.10 ", "+3", "1_000", "1.5\n2.5"]),
)


@given(st.lists(amount_texts, max_size=6), st.sampled_from(["usd", "jpy", "kwd"]))
def test_minor_units_of_many_amounts_are_those_of_each(raws, currency):
    try:
        expected = [to_minor_units(raw, currency) for raw in raws]
    except BadInput:
        with pytest.raises(BadInput):
            to_minor_units_each(raws, currency)
        return
    assert to_minor_units_each(raws, currency) == expected
