"""JSON as RFC 8259 defines it, for the events that arrive from outside.

Python's ``json`` also reads ``NaN``, ``Infinity`` and ``-Infinity``, and reads ``1e400``
as infinity. None of them is JSON, Stripe never sends them, and PostgreSQL's ``jsonb``
refuses them. Read leniently, such an event was kept on SQLite but quarantined on
PostgreSQL and Supabase. Read with ``loads``, it is unreadable on every store, and its
reason names the value.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NotJson(ValueError):
    """A number that JSON has no way to write (``NaN``, ``Infinity``, ``1e400``)."""


def _refuse_constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotJson(f"the number {text[:40]} is too large for JSON")
    return value


#: ``raw_decode`` and ``decode`` that refuse what JSON cannot write (``NotJson``).
DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def loads(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and numbers too large for a float
    (``NotJson``); every other failure is ``json.loads``'s own."""
    return DECODER.decode(text)
