"""Usage-ledger entries: what finance records against a customer, and the rules for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Final, NamedTuple, TypeVar

from cloudgreet_billing.domain.inputs import (
    ENTRY_FUTURE_LIMIT,
    MAX_EXTERNAL_ID_LENGTH,
    MAX_TEXT_LENGTH,
    check_entry_time,
    check_stripe_id,
    optional_text,
    plain_text,
    refuse_unprintable,
    shown,
)
from cloudgreet_billing.domain.money import parse_currency, to_minor_units
from cloudgreet_billing.domain.stripe_fields import is_stripe_id
from cloudgreet_billing.domain.timefmt import parse_instant
from cloudgreet_billing.errors import BadInput

KINDS: Final = ("subscription", "booking_fee", "credit_adjustment")
KIND_SET: Final = frozenset(KINDS)
CUSTOMER_PREFIX: Final = "cus_"
INVOICE_PREFIX: Final = "in_"
#: Entries kept per import memo; past this a memo starts again, bounding memory.
MEMO_LIMIT: Final = 65_536

_K = TypeVar("_K")
_V = TypeVar("_V")


class LedgerDraft(NamedTuple):
    """A validated entry not yet recorded (a tuple: imports make millions of them)."""

    customer_id: str
    kind: str
    amount: int
    currency: str
    occurred_at: datetime
    invoice_id: str | None = None
    description: str | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A recorded entry."""

    id: int
    customer_id: str
    kind: str
    amount: int
    currency: str
    occurred_at: datetime
    invoice_id: str | None
    description: str | None
    external_id: str | None
    created_at: datetime


def check_customer_id(raw: str) -> str:
    return check_stripe_id(raw, CUSTOMER_PREFIX)


def check_invoice_id(raw: str | None) -> str | None:
    """An invoice id; blank (spaces, or an empty cell) is no invoice."""
    if raw is None or not raw.strip(" "):
        return None
    return check_stripe_id(raw, INVOICE_PREFIX)


def check_description(raw: str | None) -> str | None:
    return optional_text(raw, field="description")


def check_external_id(raw: str | None) -> str | None:
    return optional_text(raw, field="external_id", max_length=MAX_EXTERNAL_ID_LENGTH)


def check_kind(raw: str) -> str:
    if raw in KIND_SET:
        return raw
    if not raw.isprintable():
        refuse_unprintable(raw, field="kind")
    value = raw.strip()
    if value not in KIND_SET:
        raise BadInput(f"kind {shown(raw)} is not one of {', '.join(KINDS)}")
    return value


def make_draft(
    *,
    customer_id: str,
    kind: str,
    amount: str,
    currency: str,
    occurred_at: str | datetime,
    invoice_id: str | None = None,
    description: str | None = None,
    external_id: str | None = None,
    now: datetime | None = None,
) -> LedgerDraft:
    """Validate typed or imported values into a draft; the first problem raises ``BadInput``.
    With ``now``, the entry's time may be at most a year after it (``domain.inputs``)."""
    checked_kind = check_kind(kind)
    checked_currency = parse_currency(currency)
    minor = to_minor_units(amount, checked_currency)
    if minor < 0 and checked_kind != "credit_adjustment":
        raise BadInput(
            f"amount {amount} is negative, which only credit_adjustment entries may be",
            hint="record refunds and credits with --kind credit_adjustment",
        )
    moment = (
        occurred_at
        if isinstance(occurred_at, datetime)
        else parse_instant(occurred_at, field="occurred_at")
    )
    if now is not None:
        check_entry_time(moment, now)
    return LedgerDraft(
        customer_id=check_customer_id(customer_id),
        kind=checked_kind,
        amount=minor,
        currency=checked_currency,
        occurred_at=moment,
        invoice_id=check_invoice_id(invoice_id),
        description=check_description(description),
        external_id=check_external_id(external_id),
    )


class Memo(dict[_K, _V]):
    """A dict that fills itself: ``memo[key]`` calls ``convert(key)`` once per distinct key
    (and ``map(memo.__getitem__, column)`` converts a whole column in C). Past ``limit``
    entries it starts again, bounding memory. A conversion's ``BadInput`` propagates and
    nothing is kept."""

    def __init__(self, convert: Callable[[_K], _V], *, limit: int = MEMO_LIMIT) -> None:
        super().__init__()
        self._convert = convert
        self._limit = limit

    def __missing__(self, key: _K) -> _V:
        if len(self) >= self._limit:
            self.clear()
        value = self[key] = self._convert(key)
        return value


class DraftParser:
    """``make_draft`` for the rows of an import: the same rules, drafts and errors, faster.

    Imported files repeat the same currencies, prices and often times on many rows, so
    each field's parse is memoised for the import (the parsers are pure). A row whose
    fields are all well-formed is checked inline; anything else goes through
    ``make_draft`` itself, so a bad row raises exactly the error it raises elsewhere.
    """

    MEMO_LIMIT: Final = MEMO_LIMIT

    def __init__(self, *, now: datetime | None = None) -> None:
        #: Entry times after this are refused (``make_draft``'s ``now``); None: no bound.
        self._now = now
        self._latest = None if now is None else now + ENTRY_FUTURE_LIMIT
        self._currencies = Memo(parse_currency, limit=self.MEMO_LIMIT)
        self._minor_units = Memo(_minor_units_of, limit=self.MEMO_LIMIT)
        self._moments = Memo(partial(parse_instant, field="occurred_at"), limit=self.MEMO_LIMIT)

    def __call__(
        self,
        customer_id: str,
        kind: str,
        amount: str,
        currency: str,
        occurred_at: str,
        invoice_id: str | None = None,
        description: str | None = None,
        external_id: str | None = None,
    ) -> LedgerDraft:
        minor = 0
        try:
            checked_currency = self._currencies[currency]
            minor = self._minor_units[(amount, checked_currency)]
            moment = self._moments[occurred_at]
            well_formed = True
        except BadInput:
            well_formed = False
        # Spaces only: any other character around an id is make_draft's to judge.
        customer = customer_id.strip(" ")
        invoice = invoice_id.strip(" ") if invoice_id else None
        if (
            not well_formed
            or kind not in KIND_SET
            or (minor < 0 and kind != "credit_adjustment")
            or (self._latest is not None and moment > self._latest)
            or not is_stripe_id(customer, CUSTOMER_PREFIX)
            or (invoice and not is_stripe_id(invoice, INVOICE_PREFIX))
            or not plain_text(description, MAX_TEXT_LENGTH)
            or not plain_text(external_id, MAX_EXTERNAL_ID_LENGTH)
        ):
            return make_draft(
                customer_id=customer_id,
                kind=kind,
                amount=amount,
                currency=currency,
                occurred_at=occurred_at,
                invoice_id=invoice_id,
                description=description,
                external_id=external_id,
                now=self._now,
            )
        # tuple.__new__ skips NamedTuple's keyword-handling constructor: millions of rows.
        return tuple.__new__(
            LedgerDraft,
            (
                customer,
                kind,
                minor,
                checked_currency,
                moment,
                invoice or None,
                description.strip() or None if description else None,
                external_id.strip() or None if external_id else None,
            ),
        )


def _minor_units_of(key: tuple[str, str]) -> int:
    return to_minor_units(*key)
