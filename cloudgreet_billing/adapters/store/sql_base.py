"""The dialect seam under every SQL mixin: connection hooks and value conversions.

Queries are written once, with ``?`` placeholders and syntax both engines accept
(``ON CONFLICT``, ``RETURNING``, partial indexes). ``SqliteStore`` and ``PostgresStore``
supply the connection, transactions, placeholder style, JSON and time conversions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson

from cloudgreet_billing.errors import BillingError

_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class Cursor:
    """The slice of DB-API cursors both drivers share, for type checking."""

    rowcount: int

    def fetchone(self) -> Sequence[Any] | None:  # pragma: no cover
        raise NotImplementedError

    def fetchall(self) -> list[Sequence[Any]]:  # pragma: no cover
        raise NotImplementedError


class SqlBase:
    """Dialect hooks; area mixins (ledger, mirror, alerts, dunning, finance) build on them."""

    backend: str
    location: str
    #: Whether opening the store made a new, empty one (SQLite creates its file).
    created: bool = False

    # --- dialect hooks ------------------------------------------------------
    def _execute(self, query: str, params: Sequence[Any] = ()) -> Cursor:
        raise NotImplementedError

    def _executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> int:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[None]:
        """A write transaction that takes the write lock up front."""
        raise NotImplementedError

    def _store_fault(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a fault of the store itself (locked, unreachable, refusing
        writes, a serialization failure), which a retry can cure, rather than of the data
        it was given (a constraint, a value out of range), which no retry cures."""
        raise NotImplementedError

    def explain_failure(self, exc: BaseException) -> BillingError | None:
        """The operator's view of a failure of the store itself, with the fix; None when
        there is none to give."""
        return None

    def _json_param(self, value: Any) -> Any:
        return json_column(value)

    @staticmethod
    def _json_value(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    @staticmethod
    def _time(value: Any) -> datetime:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.astimezone(UTC)

    def _optional_time(self, value: Any) -> datetime | None:
        return None if value is None else self._time(value)

    def close(self) -> None:
        raise NotImplementedError

    def migrate(self) -> list[int]:
        raise NotImplementedError


def json_column(value: Any) -> str:
    """``value`` as the text of a JSON column: compact, keys sorted.

    orjson writes a Stripe object four times as fast as ``json.dumps`` (a sync writes
    thousands), and refuses what it would write differently: integers beyond 64 bits,
    strings that are not Unicode (lone surrogates), keys that are not strings, and
    (``OPT_PASSTHROUGH_*``) dataclasses, datetimes and subclasses of ``str``, ``int``,
    ``dict`` or ``list``. Those go to ``json.dumps``, as everything did before. The texts
    differ only in spelling: orjson writes ``é`` where ``json.dumps`` writes ``\\u00e9``.

    orjson writes ``NaN`` and infinities as ``null``; none reaches here, since events are
    read as JSON defines it (``domain.json_text``).
    """
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one, as is its "Dict key must be str"
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def chunked(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of at most ``size`` items from ``rows``."""
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch
