"""Ledger entries a batch at a time, column by column: how imports check and store rows.

A million-row import cannot afford a Python call per row and field. ``BatchParser``
checks a batch of rows one column at a time: ids as sets of distinct values, amounts with
one regular expression per column, and conversions with C-level ``map`` (over memos for
the values that repeat: currencies and times). It accepts only batches whose every
cell is already in canonical form (``cus_1``, not `` cus_1 ``); for any other batch it
returns ``None``, and the caller parses that batch row by row with ``DraftParser``, which
is ``make_draft``. So a batch either gives exactly the drafts ``make_draft`` gives, or
goes to ``make_draft`` (a property test holds the two together).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import compress, islice
from typing import Final, TypeVar

from cloudgreet_billing.domain.inputs import (
    ENTRY_FUTURE_LIMIT,
    MAX_EXTERNAL_ID_LENGTH,
    MAX_TEXT_LENGTH,
    plain_text,
)
from cloudgreet_billing.domain.ledger import (
    CUSTOMER_PREFIX,
    INVOICE_PREFIX,
    KIND_SET,
    MEMO_LIMIT,
    LedgerDraft,
    Memo,
)
from cloudgreet_billing.domain.money import parse_currency, to_minor_units_each
from cloudgreet_billing.domain.stripe_fields import is_stripe_id
from cloudgreet_billing.domain.timefmt import parse_instant
from cloudgreet_billing.errors import BadInput

#: Rows per batch: small enough that a batch's rows stay in the CPU's caches (measured:
#: 500 rows read and checked faster than 5,000).
BATCH_ROWS: Final = 500

_CREDIT = "credit_adjustment"
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    """Validated entries not yet recorded, as equally long columns."""

    customer_id: Sequence[str]
    kind: Sequence[str]
    amount: Sequence[int]
    currency: Sequence[str]
    occurred_at: Sequence[datetime]
    invoice_id: Sequence[str | None]
    description: Sequence[str | None]
    external_id: Sequence[str | None]

    @property
    def size(self) -> int:
        return len(self.customer_id)

    def columns(self) -> tuple[Sequence[object], ...]:
        """The columns in ``LedgerDraft``'s field order."""
        return (
            self.customer_id,
            self.kind,
            self.amount,
            self.currency,
            self.occurred_at,
            self.invoice_id,
            self.description,
            self.external_id,
        )

    def drafts(self) -> Iterator[LedgerDraft]:
        # tuple.__new__ skips NamedTuple's keyword-handling constructor.
        return map(partial(tuple.__new__, LedgerDraft), zip(*self.columns(), strict=True))

    @classmethod
    def of(cls, drafts: Iterable[LedgerDraft]) -> LedgerBatch:
        columns = list(zip(*drafts, strict=True))
        if not columns:
            return cls((), (), (), (), (), (), (), ())
        return cls(*columns)


def batches_of(drafts: Iterable[LedgerDraft], size: int = BATCH_ROWS) -> Iterator[LedgerBatch]:
    """Drafts, ``size`` at a time, as batches."""
    iterator = iter(drafts)
    while chunk := list(islice(iterator, size)):
        yield LedgerBatch.of(chunk)


class BatchParser:
    """``DraftParser`` for a batch of canonical rows at once (see the module docstring)."""

    def __init__(self, *, now: datetime | None = None) -> None:
        #: Entry times after this send the batch row by row (``make_draft``'s ``now``).
        self._latest = None if now is None else now + ENTRY_FUTURE_LIMIT
        self._customers: set[str] = set()
        self._invoices: set[str] = {""}  # an empty invoice cell is allowed: no invoice
        self._currencies = Memo(parse_currency)
        self._moments = Memo(partial(parse_instant, field="occurred_at"))

    def __call__(self, columns: Sequence[Sequence[str] | None]) -> LedgerBatch | None:
        """Columns in the import's order (``services.ledger_csv.ALL_COLUMNS``); an optional
        column the file lacks is ``None``. ``None`` back: parse this batch row by row."""
        customer_id, kind, amount, currency, occurred_at, invoice_id, description, external_id = (
            columns
        )
        assert customer_id and kind and amount and currency and occurred_at, "rows, all required"
        self._bound_memos()
        try:
            currencies = self._currency_column(currency)
            amounts = self._amount_column(amount, currencies)
            moments = list(map(self._moments.__getitem__, occurred_at))
        except BadInput:
            return None
        if (
            (self._latest is not None and max(moments) > self._latest)
            or not _all_plain(description, MAX_TEXT_LENGTH)
            or not _all_plain(external_id, MAX_EXTERNAL_ID_LENGTH)
            or not _all_canonical(customer_id, self._customers, CUSTOMER_PREFIX)
            or not KIND_SET.issuperset(kind)
            or (min(amounts) < 0 and _negative_outside_credits(amounts, kind))
            or (
                invoice_id is not None
                and not _all_canonical(invoice_id, self._invoices, INVOICE_PREFIX)
            )
        ):
            return None
        rows = len(customer_id)
        return LedgerBatch(
            customer_id=customer_id,
            kind=kind,
            amount=amounts,
            currency=currencies,
            occurred_at=moments,
            invoice_id=_empty_as_none(invoice_id, rows),
            description=_stripped(description, rows),
            external_id=_stripped(external_id, rows),
        )

    def _bound_memos(self) -> None:
        for known in (self._customers, self._invoices):
            if len(known) > MEMO_LIMIT:
                known.clear()
        self._invoices.add("")

    def _currency_column(self, column: Sequence[str]) -> Sequence[str]:
        distinct = set(column)
        lookup = self._currencies.__getitem__
        if all(lookup(raw) == raw for raw in distinct):
            return column
        return list(map(lookup, column))

    @staticmethod
    def _amount_column(column: Sequence[str], currencies: Sequence[str]) -> list[int]:
        """Amounts are converted every time, not memoised: a ledger's amounts vary more
        than a bounded memo holds (on a million random amounts, converting measured
        faster than a memo), and converting needs no memory."""
        distinct = set(currencies)
        if len(distinct) == 1:
            return to_minor_units_each(column, distinct.pop())
        amounts = [0] * len(column)
        for code in distinct:
            at = [i for i, each in enumerate(currencies) if each == code]
            for i, minor in zip(
                at, to_minor_units_each([column[i] for i in at], code), strict=True
            ):
                amounts[i] = minor
        return amounts


def _all_canonical(column: Sequence[str], known: set[str], prefix: str) -> bool:
    """Whether every id in the column is a canonical ``prefix`` id; ``known`` holds the
    ids seen canonical so far (and any other value allowed, like an empty invoice)."""
    if known.issuperset(column):
        return True
    new = set(column) - known
    if not all(_is_canonical(value, prefix) for value in new):
        return False
    known |= new
    return True


def _is_canonical(value: str, prefix: str) -> bool:
    return is_stripe_id(value, prefix)


def _all_plain(column: Sequence[str] | None, max_length: int) -> bool:
    """Whether every cell is text ``check_text`` takes as it is: one join, one search."""
    if column is None:
        return True
    if max(map(len, column), default=0) > max_length:
        return False
    joined = "".join(column)
    return plain_text(joined, len(joined))


def _negative_outside_credits(amounts: Sequence[int], kinds: Sequence[str]) -> bool:
    negative = map((0).__gt__, amounts)
    return not {_CREDIT}.issuperset(compress(kinds, negative))


def _empty_as_none(column: Sequence[str] | None, rows: int) -> Sequence[str | None]:
    if column is None:
        return [None] * rows
    return [value or None for value in column] if "" in column else column


def _stripped(column: Sequence[str] | None, rows: int) -> Sequence[str | None]:
    """``make_draft``'s rule for free text: surrounding blanks go; an empty cell is None."""
    if column is None:
        return [None] * rows
    stripped: list[str | None] = list(map(str.strip, column))
    return [value or None for value in stripped] if "" in stripped else stripped
