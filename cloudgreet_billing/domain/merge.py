"""How the mirror merges what Stripe tells it, so that the order of events does not matter.

Stripe delivers events at least once and in no guaranteed order, and many share a second
(``invoice.finalized`` with ``invoice.payment_failed``, ``invoice.paid`` with
``invoice.payment_succeeded``, two ``customer.subscription.updated``). Whatever the order,
and however often an event is replayed, the same events leave the same mirror, alerts and
dunning steps. Each piece of state is therefore the largest (or smallest) of what was seen
under a key that depends only on the event and its object, never on when it arrived:

- **The object shown** (every mirrored column not named below, ``raw`` included) comes from
  one observation, the one with the largest key:

  - invoice: ``(status rank, event created, attempt_count, event id)``. The status rank
    (``INVOICE_STATUS_RANK``) comes first, so an invoice only moves forward: draft, open,
    then uncollectible, void or paid; a settled invoice never goes back to open, and an
    uncollectible one may still be voided or paid.
  - subscription: ``(terminal, event created, current period end, status rank, event
    id)``: a canceled (or expired) subscription stays so; otherwise the newest event wins,
    and in the same second the later period, then ``SUBSCRIPTION_STATUS_RANK``.
  - customer: ``(deleted, event created, event id)``: a deleted customer stays deleted.

  A listing (``sync --backfill``, an operator action's answer) counts as an event created
  when it was read, with the empty event id: it loses a tie with any event.
- **Counters never fall**: an invoice's ``attempt_count`` is the highest seen, and
  ``attempted`` stays true once seen true.
- **Failures**: ``first_failed_at`` is the earliest failure's time; the last failure's code,
  message and decline (decline code, advice code, the card that failed) come from the
  failure with the largest ``(attempt_count, event created, carries a decline, event id)``,
  so a payment event arriving first (it carries no error) loses nothing, and of two reports
  of one attempt in one second (``payment_intent.payment_failed`` and an
  ``invoice.payment_failed`` without its PaymentIntent) the one with the decline wins. A
  manual charge's decline (``retry``) is a failure observed when Stripe answered, with no
  event id.
- **Settlement**: an invoice event whose object is paid, void or uncollectible settles it.
  The settlement that counts is the earliest by ``(event created, event id)``: its
  resolution (``invoice paid (evt_…)``) is what every alert of the invoice resolved by an
  event, and every step canceled by one, says, whichever settling event arrived first.
- **Alerts** from events: one per invoice and type while unresolved (as before). What an
  alert says (attempt count, amount, failure, event, details) comes from the event with
  the largest ``(attempt_count, event created, event id)``. A failure of an invoice
  already settled adds to the alert the settlement resolved, or, when none exists yet,
  opens it already resolved by that settlement, with its dunning steps canceled: the
  history a payment arriving first would otherwise erase.
- **Dunning steps** are planned from ``first_failed_at``; a step not yet acted on
  (scheduled, or canceled by a settlement) moves earlier when an older failure arrives.

What stays arrival-dependent, by nature: the times the store itself stamps
(``synced_at``, an alert's ``created_at``, ``updated_at``, ``resolved_at``, a step's
``created_at``) and the audit log, which records which delivery did what.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from cloudgreet_billing.domain.statuses import SETTLED_INVOICE_STATUSES

#: An invoice's status only moves up this rank (draft → open → uncollectible → void | paid).
INVOICE_STATUS_RANK: Final[Mapping[str, int]] = {
    "draft": 0,
    "open": 1,
    "uncollectible": 2,
    "void": 3,
    "paid": 4,
}
#: Same-second tie-break between two subscription states, after the period: the state
#: Stripe moves a subscription into later in its cycles. A first payment makes an
#: incomplete subscription active, a trial ends active or paused, and a payment that
#: recovers a failing subscription (past_due, unpaid) makes it active again: when the
#: failure and the recovery share a second, the recovery came after. Terminal ones last.
SUBSCRIPTION_STATUS_RANK: Final[Mapping[str, int]] = {
    "incomplete": 0,
    "trialing": 1,
    "paused": 2,
    "past_due": 3,
    "unpaid": 4,
    "active": 5,
    "incomplete_expired": 6,
    "canceled": 7,
}
#: Subscription statuses Stripe never leaves.
TERMINAL_SUBSCRIPTION_STATUSES: Final = frozenset({"canceled", "incomplete_expired"})
#: The resolution an invoice's settlement gives its alerts, by the settled status.
SETTLEMENT_RESOLUTIONS: Final[Mapping[str, str]] = {
    "paid": "invoice paid",
    "void": "invoice voided",
    "uncollectible": "invoice marked uncollectible",
}
#: The event id of an observation that is no event (a listing, an operator's action).
NO_EVENT: Final = ""

assert set(SETTLEMENT_RESOLUTIONS) == set(SETTLED_INVOICE_STATUSES)

InvoiceKey = tuple[int, datetime, int, str]
SubscriptionKey = tuple[bool, datetime, datetime, int, str]
CustomerKey = tuple[bool, datetime, str]
FailureKey = tuple[int, datetime, int, str]
SettlementKey = tuple[datetime, str]


def invoice_key(
    status: str, observed_at: datetime, attempt_count: int, event_id: str
) -> InvoiceKey:
    """The key under which an invoice observation wins (the largest is shown)."""
    return (INVOICE_STATUS_RANK[status], observed_at, attempt_count, event_id)


def subscription_key(
    status: str, observed_at: datetime, current_period_end: datetime | None, event_id: str
) -> SubscriptionKey:
    """The key under which a subscription observation wins (the largest is shown). A
    missing period counts as the observation's own time."""
    return (
        status in TERMINAL_SUBSCRIPTION_STATUSES,
        observed_at,
        current_period_end or observed_at,
        SUBSCRIPTION_STATUS_RANK[status],
        event_id,
    )


def customer_key(deleted: bool, observed_at: datetime, event_id: str) -> CustomerKey:
    """The key under which a customer observation wins (the largest is shown)."""
    return (deleted, observed_at, event_id)


def failure_key(
    attempt_count: int, created: datetime, event_id: str, *, carries_decline: bool = False
) -> FailureKey:
    """The key of a failure: the largest is the last. An event's alert content is merged
    by the same key without the decline (``carries_decline`` False for every event)."""
    return (attempt_count, created, int(carries_decline), event_id)


def settlement_key(created: datetime, event_id: str) -> SettlementKey:
    """The key of a settling event: the smallest settles the invoice."""
    return (created, event_id)


def settlement(status: str, event_id: str) -> str | None:
    """The resolution an invoice event settles with (``invoice paid (evt_…)``), or None
    when its object is not settled."""
    verb = SETTLEMENT_RESOLUTIONS.get(status)
    return None if verb is None else f"{verb} ({event_id})"
