"""Reading a Stripe object field by field, each field's type checked where it is read.

Every parser (``domain.mirror``, ``domain.events``) reads through ``Fields``, so a value of
the wrong type, too large for its column or out of range is refused as ``BadInput`` with
one precise line naming the object and the field, never as an untyped exception later
(``int([1])``) or as a database error (a CHECK, ``bigint out of range``):

    invoice in_1QpL8H… field amount_due: expected an integer, got list

The limits are the store's: amounts are PostgreSQL ``bigint``, counts ``integer``; times
are Unix seconds between 2000 and 2100 (Stripe's objects are all after 2011); ids carry
the prefix Stripe gives each kind and Stripe's characters only; currencies are three
letters, stored lowercase as Stripe sends them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Final, TypeGuard

from cloudgreet_billing.domain.timefmt import utc_from_unix
from cloudgreet_billing.errors import BadInput

BIGINT_MIN: Final = -(2**63)
BIGINT_MAX: Final = 2**63 - 1
#: PostgreSQL ``integer``: ``attempt_count``.
INTEGER_MAX: Final = 2**31 - 1
#: 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z.
EARLIEST_TIME: Final = 946_684_800
LATEST_TIME: Final = 4_102_444_800
#: Stripe's ids are at most 255 characters: a prefix, then letters, digits and ``_``.
MAX_ID_LENGTH: Final = 255
_ID_BODY = r"[A-Za-z0-9_]+"
#: A compiled pattern per id prefix, made on first use.
_ID_PATTERNS: dict[str, re.Pattern[str]] = {}
_CURRENCY = re.compile(r"[A-Za-z]{3}")
#: How much of a bad value a reason quotes: a reason is one short line.
QUOTED_CHARS: Final = 40


def describe(value: Any) -> str:
    """A bad value as a reason names it: its JSON type, and a short quote of a scalar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        if value.bit_length() > 64:
            # str() of a huge int is slow, and refused past 4,300 digits.
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def quote(text: str) -> str:
    """``text`` quoted for a one-line reason: escaped (``repr``) and shortened."""
    shown = repr(text[:QUOTED_CHARS])
    return shown if len(text) <= QUOTED_CHARS else f"{shown}…"


class Fields:
    """The fields of one object, read with their types checked.

    ``what`` names the object in reasons (``invoice in_1…``); ``path`` prefixes nested
    fields (``last_finalization_error.``). Absent and ``null`` are the same to Stripe.

    Example: ``Fields(obj, "invoice in_1").integer("amount_due")``
    """

    __slots__ = ("_obj", "_path", "what")

    #: Reassigned once the object's id is read (``invoice`` becomes ``invoice in_1…``).
    what: str

    def __init__(self, obj: Mapping[str, Any], what: str, *, path: str = "") -> None:
        self._obj = obj
        self.what = what
        self._path = path

    def bad(self, key: str, expected: str, value: Any) -> BadInput:
        """The refusal of field ``key``: what was expected and what came."""
        return BadInput(
            f"{self.what} field {self._path}{key}: expected {expected}, got {describe(value)}"
        )

    def raw(self, key: str) -> Any:
        return self._obj.get(key)

    def nested(self, key: str) -> Fields | None:
        """The object under ``key`` (``None`` when absent); anything else is refused."""
        value = self._obj.get(key)
        if value is None:
            return None
        # ``type(…) is dict`` first: decoded JSON is dicts, and the ABC check costs more.
        if type(value) is not dict and not isinstance(value, Mapping):
            raise self.bad(key, "an object", value)
        return Fields(value, self.what, path=f"{self._path}{key}.")

    # --- numbers ------------------------------------------------------------------
    def optional_integer(
        self, key: str, *, minimum: int = BIGINT_MIN, maximum: int = BIGINT_MAX
    ) -> int | None:
        value = self._obj.get(key)
        if value is None:
            return None
        # bool is an int subclass: true is not 1 here.
        if type(value) is not int:
            raise self.bad(key, "an integer", value)
        if not minimum <= value <= maximum:
            raise self.bad(key, f"an integer from {minimum} to {maximum}", value)
        return value

    def integer(
        self, key: str, *, default: int = 0, minimum: int = BIGINT_MIN, maximum: int = BIGINT_MAX
    ) -> int:
        value = self._obj.get(key)
        if type(value) is int and minimum <= value <= maximum:
            return value  # the common case, without a second call
        value = self.optional_integer(key, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def count(self, key: str) -> int:
        """A non-negative ``integer`` column (``attempt_count``), 0 when absent."""
        return self.integer(key, minimum=0, maximum=INTEGER_MAX)

    # --- flags, text and choices ----------------------------------------------------
    def boolean(self, key: str, *, default: bool = False) -> bool:
        value = self._obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.bad(key, "true or false", value)
        return value

    def optional_string(self, key: str) -> str | None:
        value = self._obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.bad(key, "a string", value)
        if "\x00" in value:
            # PostgreSQL text cannot hold NUL; refuse it on every store alike.
            raise self.bad(key, "text without NUL characters", value)
        return value

    def string(self, key: str) -> str:
        value = self.optional_string(key)
        if value is None:
            raise self.bad(key, "a string", None)
        return value

    def choice(self, key: str, allowed: Collection[str], *, default: str | None = None) -> str:
        """One of ``allowed`` (``default`` when absent, required without one)."""
        value = self._obj.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or value not in allowed:
            raise self.bad(key, f"one of {', '.join(sorted(allowed))}", value)
        return value

    def optional_currency(self, key: str) -> str | None:
        value = self._obj.get(key)
        if value is None:
            return None
        if not is_currency_code(value):
            raise self.bad(key, "a three-letter currency code", value)
        return value.lower()

    def currency(self, key: str) -> str:
        value = self.optional_currency(key)
        if value is None:
            raise self.bad(key, "a three-letter currency code", None)
        return value

    # --- times --------------------------------------------------------------------
    def optional_time(self, key: str) -> datetime | None:
        seconds = self._obj.get(key)
        if seconds is None:
            return None
        if not is_unix_time(seconds):
            raise self.bad(key, "a Unix time between 2000 and 2100", seconds)
        return utc_from_unix(seconds)

    def time(self, key: str) -> datetime:
        moment = self.optional_time(key)
        if moment is None:
            raise self.bad(key, "a Unix time between 2000 and 2100", None)
        return moment

    # --- ids ----------------------------------------------------------------------
    def optional_id(self, key: str, prefix: str, *, expandable: bool = False) -> str | None:
        """An id with Stripe's ``prefix`` (``cus_``); ``expandable``: or the object it
        names, expanded (``{"id": "cus_…", …}``)."""
        value = self._obj.get(key)
        if expandable and type(value) is not str and isinstance(value, Mapping):
            value = value.get("id")
        if value is None:
            return None
        if not is_stripe_id(value, prefix):
            raise self.bad(key, f"an id starting {prefix}", value)
        assert isinstance(value, str)
        return value

    def id(self, key: str, prefix: str, *, expandable: bool = False) -> str:
        value = self.optional_id(key, prefix, expandable=expandable)
        if value is None:
            raise self.bad(key, f"an id starting {prefix}", None)
        return value


def is_stripe_id(value: Any, prefix: str) -> TypeGuard[str]:
    """Whether ``value`` is an id of the kind ``prefix`` names, in Stripe's characters."""
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        return False
    pattern = _ID_PATTERNS.get(prefix)
    if pattern is None:
        pattern = _ID_PATTERNS[prefix] = re.compile(re.escape(prefix) + _ID_BODY)
    return pattern.fullmatch(value) is not None


def is_bigint(value: Any) -> TypeGuard[int]:
    """An integer (not a bool) that fits PostgreSQL's ``bigint``: an amount."""
    return type(value) is int and BIGINT_MIN <= value <= BIGINT_MAX


def is_unix_time(value: Any) -> TypeGuard[int]:
    """Unix seconds (an integer, not a bool) between 2000 and 2100."""
    return type(value) is int and EARLIEST_TIME <= value < LATEST_TIME


def is_currency_code(value: Any) -> TypeGuard[str]:
    """Three letters, in any case (stored lowercase)."""
    return isinstance(value, str) and _CURRENCY.fullmatch(value) is not None
