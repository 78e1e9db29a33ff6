"""Usage-ledger entries: what finance records against a customer, and the rules for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Final, NamedTuple

from cloudgreet_billing.domain.money import parse_currency, to_minor_units
from cloudgreet_billing.domain.timefmt import parse_instant
from cloudgreet_billing.errors import BadInput

KINDS: Final = ("subscription", "booking_fee", "credit_adjustment")
_KIND_SET: Final = frozenset(KINDS)
CUSTOMER_PREFIX: Final = "cus_"
INVOICE_PREFIX: Final = "in_"


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
    value = raw.strip()
    if not value.startswith(CUSTOMER_PREFIX) or len(value) <= len(CUSTOMER_PREFIX):
        raise BadInput(f"customer {raw!r} is not a Stripe customer id", hint="use cus_…")
    return value


def check_invoice_id(raw: str | None) -> str | None:
    value = (raw or "").strip()
    if not value:
        return None
    if not value.startswith(INVOICE_PREFIX) or len(value) <= len(INVOICE_PREFIX):
        raise BadInput(f"invoice {raw!r} is not a Stripe invoice id", hint="use in_…")
    return value


def check_kind(raw: str) -> str:
    if raw in _KIND_SET:
        return raw
    value = raw.strip()
    if value not in _KIND_SET:
        raise BadInput(f"kind {raw!r} is not one of {', '.join(KINDS)}")
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
) -> LedgerDraft:
    """Validate typed or imported values into a draft; the first problem raises ``BadInput``."""
    checked_kind = check_kind(kind)
    checked_currency = _currency(currency)
    minor = _minor_units(amount, checked_currency)
    if minor < 0 and checked_kind != "credit_adjustment":
        raise BadInput(
            f"amount {amount} is negative, which only credit_adjustment entries may be",
            hint="record refunds and credits with --kind credit_adjustment",
        )
    moment = occurred_at if isinstance(occurred_at, datetime) else _occurred_at(occurred_at)
    return LedgerDraft(
        customer_id=check_customer_id(customer_id),
        kind=checked_kind,
        amount=minor,
        currency=checked_currency,
        occurred_at=moment,
        invoice_id=check_invoice_id(invoice_id),
        description=description.strip() or None if description else None,
        external_id=external_id.strip() or None if external_id else None,
    )


# Imported files repeat the same currencies, dates and prices on many rows; the parsers are
# pure, so their answers are memoised (a bad value raises again on every row it appears in).
_currency = lru_cache(maxsize=256)(parse_currency)
_minor_units = lru_cache(maxsize=65_536)(to_minor_units)


@lru_cache(maxsize=65_536)
def _occurred_at(raw: str) -> datetime:
    return parse_instant(raw, field="occurred_at")
