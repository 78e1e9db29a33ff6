"""Money as Stripe keeps it: an integer in the currency's minor unit, plus the currency.

Amounts typed by people are parsed with ``Decimal`` (never float) and must fit the
currency's minor unit exactly: ``12.345`` dollars is an error, not a rounding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from itertools import repeat
from operator import mul

from cloudgreet_billing.domain.inputs import refuse_unprintable, shown
from cloudgreet_billing.domain.iso4217 import ISO_4217
from cloudgreet_billing.errors import BadInput

# Stripe's zero-decimal currencies: amounts are whole units (¥500 is 500).
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()  # noqa: SIM905
)
# Currencies whose minor unit is a thousandth.
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

# JavaScript consumers of our JSON lose precision past 2**53 - 1.
MAX_MINOR_UNITS = 2**53 - 1
#: The longest amount text read: 16 digits, a point, 3 decimals, a sign, with room for
#: leading and trailing zeros (``0012.50``). Longer text is refused unread.
MAX_AMOUNT_CHARS = 64

_AMOUNT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_CURRENCY = re.compile(r"[a-z]{3}")


def _plain_amount(places: int) -> str:
    """An amount in plain form for a currency with this many decimals: at most 15 digits,
    so always within MAX_MINOR_UNITS."""
    fraction = rf"(?:\.[0-9]{{1,{places}}})?" if places else ""
    return rf"-?[0-9]{{1,{15 - places}}}{fraction}"


#: Minor units per major unit, by decimal places.
_UNITS = {places: Decimal(10**places) for places in (0, 2, 3)}
#: Runs of plain amounts, one per line: ``to_minor_units_each`` checks a batch in one match.
_PLAIN_RUNS = {
    places: re.compile(rf"(?:{_plain_amount(places)}\n)*{_plain_amount(places)}")
    for places in (0, 2, 3)
}
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


def exponent(currency: str) -> int:
    """How many decimal places the currency's major unit has."""
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def parse_currency(raw: str) -> str:
    """A lowercase ISO 4217 code (``domain.iso4217``); ``USD`` is accepted and lowered."""
    currency = raw.strip().lower()
    if not raw.isprintable():
        refuse_unprintable(raw, field="currency")
    if currency not in ISO_4217:
        problem = (
            "is not an ISO 4217 currency code"
            if _CURRENCY.fullmatch(currency)
            else "is not a 3-letter ISO code (ISO 4217)"
        )
        raise BadInput(f"currency {shown(raw)} {problem}", hint="use e.g. usd, eur, jpy")
    return currency


def to_minor_units(raw: str, currency: str) -> int:
    """Parse a major-unit amount typed by a person (``"12.34"``) into minor units (1234).
    A refusal quotes the amount shortened: a million digits are not echoed back."""
    text = raw.strip()
    if not raw.isprintable():
        refuse_unprintable(raw, field="amount")
    if len(text) > MAX_AMOUNT_CHARS:
        # More digits than any amount that fits: refused before Decimal reads them all.
        raise BadInput(
            f"amount {shown(raw)} is too large", hint=f"at most {MAX_MINOR_UNITS} minor units"
        )
    if not _AMOUNT.fullmatch(text):
        raise BadInput(
            f"amount {shown(raw)} is not a number", hint="write it in major units, e.g. 12.34"
        )
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise BadInput(f"amount {shown(raw)} is not a number") from None
    places = exponent(currency)
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        unit = "whole units" if places == 0 else f"{places} decimal places"
        raise BadInput(
            f"amount {shown(raw)} has more precision than {currency.upper()} allows ({unit})"
        )
    result = int(minor)
    if abs(result) > MAX_MINOR_UNITS:
        raise BadInput(
            f"amount {shown(raw)} is too large", hint=f"at most {MAX_MINOR_UNITS} minor units"
        )
    return result


def to_minor_units_each(raws: Sequence[str], currency: str) -> list[int]:
    """``to_minor_units`` of each text, for imports of millions of amounts: when every one
    is plain (``-12.34``), one regular expression checks them all and ``Decimal`` converts
    them in C; otherwise each goes through ``to_minor_units``, so that it is accepted or
    refused exactly as there."""
    places = exponent(currency)
    lines = "\n".join(raws)
    # A line break inside a text would pass for two amounts; the count rules that out.
    if lines.count("\n") == len(raws) - 1 and _PLAIN_RUNS[places].fullmatch(lines):
        return list(map(int, map(mul, map(Decimal, raws), repeat(_UNITS[places]))))
    return [to_minor_units(raw, currency) for raw in raws]


def to_major_string(amount: int, currency: str) -> str:
    """Minor units back to an exact decimal string in major units: 1234 usd → ``"12.34"``."""
    places = exponent(currency)
    if places == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"


def format_money(amount: int, currency: str) -> str:
    """For people: ``$123.45``, ``-€5.00``, ``¥500``, ``12.345 KWD``."""
    major = to_major_string(abs(amount), currency)
    sign = "-" if amount < 0 else ""
    symbol = _SYMBOLS.get(currency)
    if symbol:
        whole, _, frac = major.partition(".")
        grouped = f"{int(whole):,}" + (f".{frac}" if frac else "")
        return f"{sign}{symbol}{grouped}"
    return f"{sign}{major} {currency.upper()}"
