"""The drift check: does the mirror still say what Stripe says?

Webhooks get lost, an endpoint is disabled for a day, an event is quarantined and
dismissed: the mirror then drifts from Stripe without anyone noticing until a customer is
dunned for a paid invoice. ``sync --verify`` lists Stripe's objects and compares each with
the mirror, field by field, on the fields billing acts on. Pure: the service does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.domain.money import format_money

if TYPE_CHECKING:
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription

#: How far back ``--days`` may reach: Stripe keeps invoices for ever, but a check that
#: lists years of them belongs in a backfill (``sync --backfill``).
MAX_VERIFY_DAYS = 400
DEFAULT_VERIFY_DAYS = 30
#: Stripe's lists are read in windows of this many days of ``created``: each window is a
#: short, complete listing, so one that fails says which period was not compared.
WINDOW = timedelta(days=7)

#: The invoice fields billing acts on: dunning reads status and amounts, alerts the
#: attempts, reconciliation the totals.
INVOICE_FIELDS = (
    "status",
    "currency",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "total",
    "attempt_count",
)
SUBSCRIPTION_FIELDS = ("status", "currency", "cancel_at_period_end", "collection_paused")
_MONEY_FIELDS = frozenset({"amount_due", "amount_paid", "amount_remaining", "total"})


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the mirror differs from Stripe for one object."""

    object: str  # "invoice" or "subscription"
    id: str
    problem: str  # "missing_locally", "differs", "not_in_stripe_list"
    field: str | None = None
    mirror: Any = None
    stripe: Any = None
    currency: str | None = None
    repaired: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "id": self.id,
            "problem": self.problem,
            "field": self.field,
            "mirror": self.mirror,
            "stripe": self.stripe,
            "repaired": self.repaired,
        }

    def describe(self) -> str:
        """One line for people: ids whole, money formatted in its currency."""
        if self.problem == "missing_locally":
            return f"{self.object} {self.id}: in Stripe, missing from the mirror"
        if self.problem == "not_in_stripe_list":
            return (
                f"{self.object} {self.id}: the mirror has it {self.mirror}, "
                "Stripe no longer lists it so"
            )
        return (
            f"{self.object} {self.id}: {self.field} is {self._shown(self.mirror)} here, "
            f"{self._shown(self.stripe)} in Stripe"
        )

    def _shown(self, value: Any) -> str:
        if (
            self.field in _MONEY_FIELDS
            and isinstance(value, int)
            and not isinstance(value, bool)
            and self.currency
        ):
            return format_money(value, self.currency)
        return (
            "none"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )


def windows(since: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
    """``[since, until)`` cut into ``WINDOW``-long pieces, oldest first."""
    start = since
    while start < until:
        end = min(start + WINDOW, until)
        yield start, end
        start = end


def _compare(
    kind: str, fields: tuple[str, ...], local: Mapping[str, Any], remote: Mapping[str, Any]
) -> list[Difference]:
    currency = remote.get("currency")
    return [
        Difference(
            kind,
            str(remote["id"]),
            "differs",
            field=name,
            mirror=local[name],
            stripe=remote[name],
            currency=currency if isinstance(currency, str) else None,
        )
        for name in fields
        if local[name] != remote[name]
    ]


def _invoice_fields(invoice: MirroredInvoice) -> dict[str, Any]:
    return {"id": invoice.id, **{name: getattr(invoice, name) for name in INVOICE_FIELDS}}


def _subscription_fields(subscription: MirroredSubscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        **{name: getattr(subscription, name) for name in SUBSCRIPTION_FIELDS},
    }


def compare_invoice(local: MirroredInvoice | None, remote: MirroredInvoice) -> list[Difference]:
    """Stripe's invoice against the mirror's row (None: not mirrored)."""
    if local is None:
        return [Difference("invoice", remote.id, "missing_locally", currency=remote.currency)]
    return _compare("invoice", INVOICE_FIELDS, _invoice_fields(local), _invoice_fields(remote))


def compare_subscription(
    local: MirroredSubscription | None, remote: MirroredSubscription
) -> list[Difference]:
    """Stripe's subscription against the mirror's row (None: not mirrored)."""
    if local is None:
        return [Difference("subscription", remote.id, "missing_locally")]
    return _compare(
        "subscription",
        SUBSCRIPTION_FIELDS,
        _subscription_fields(local),
        _subscription_fields(remote),
    )
