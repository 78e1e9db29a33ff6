"""Revenue recovery: what became of the invoices whose payment failed in a window.

Pure rules over rows the store reads (``FailedInvoice``); ``dunning report``, the
dashboard's recovery line and ``export-csv --dataset recovery`` all show these figures.
The README's "Recovery figures" section is the user's copy of the definitions:

- **failed**: invoices whose first failed payment (``first_failed_at``) lies in the
  window ``[start, end)``; the failed amount is their ``amount_due``.
- **recovered**: a failed invoice paid in full (status ``paid``) before the window's end;
  its recovered amount is its ``amount_due``. The payment time is the earliest event that
  showed it paid (``settled_at``), or Stripe's ``status_transitions.paid_at`` when no
  event settled it as paid (a backfill, a write-off collected later).
- **partially paid**: ``amount_paid`` of failed invoices not paid in full (Stripe applied
  a customer balance or a partial payment); the rest is open, exhausted or unrecoverable.
- **unrecoverable**: voided or marked uncollectible (settled) before the window's end:
  ``amount_due - amount_paid``.
- **exhausted**: still unpaid at the window's end, after dunning escalated it (its
  ``dunning_exhausted`` alert was opened before the end): ``amount_due - amount_paid``.
- **open**: still unpaid at the window's end, not escalated: ``amount_due - amount_paid``.

So, per currency, failed = recovered + partially paid + open + exhausted + unrecoverable.

- **recovery rate**: recovered amount / failed amount, a percentage computed exactly in
  integers and shown with four places, half up (as ``reconcile``'s variance).
- **exempt**: invoices of customers on the exemption list, exempted before the invoice
  was paid or settled (or while it is unpaid), are counted apart (a row of their own in
  each currency that has any): dunning did not chase them, so they would flatter or
  spoil the rate. Breakdowns cover the invoices dunning chased.
- **last touch**: what came last before the payment: a manual ``retry`` that paid the
  invoice; else the latest dunning step sent (``day 3 email``) or pay link resent at or
  before the payment; else ``before any message`` (Stripe's own retries, or the customer).
- **decline**: the class (``domain.declines``) and code of the invoice's last failure.
- **time to recover**: payment time minus first failure, over the recovered invoices
  whose payment time is known; median and p90 by the nearest-rank method (the smallest
  time at least that share of recoveries took no longer than), so each is a real one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

from cloudgreet_billing.domain.declines import DeclineClass, classify_decline
from cloudgreet_billing.domain.reconciliation import Window

Outcome = Literal["recovered", "open", "exhausted", "unrecoverable"]
Scope = Literal["dunned", "exempt"]
Breakdown = Literal["all", "touch", "decline"]
TouchKind = Literal["step", "pay_link", "manual_retry"]

BEFORE_ANY_MESSAGE: Final = "before any message"
MANUAL_RETRY: Final = "manual retry"
PAY_LINK_RESENT: Final = "pay link resent"
#: Shown for a failure that carried no decline code (a bank debit, an authentication).
NO_DECLINE_CODE: Final = "none"
#: Percentages are shown with this many places.
PCT_PLACES: Final = 4
_DECLINE_ORDER: Final = {"hard": 0, "soft": 1, "unknown": 2}


@dataclass(frozen=True, slots=True)
class Touch:
    """Something done to get an invoice paid, and when."""

    kind: TouchKind
    at: datetime
    #: For a dunning step: its timeline day and channel.
    day: int | None = None
    channel: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "manual_retry":
            return MANUAL_RETRY
        if self.kind == "pay_link":
            return PAY_LINK_RESENT
        return f"day {self.day} {self.channel}"


@dataclass(frozen=True, slots=True)
class FailedInvoice:
    """A mirrored invoice whose payment failed, with what the report needs of it."""

    id: str
    customer_id: str
    currency: str
    status: str
    amount_due: int
    amount_paid: int
    first_failed_at: datetime
    #: The earliest settling event (paid, void or uncollectible), if one was seen.
    settled_at: datetime | None
    #: When it was paid (see the module's definitions); None while unpaid, or unknown.
    paid_at: datetime | None
    #: When its ``dunning_exhausted`` alert was opened, if ever.
    exhausted_at: datetime | None
    #: When its customer was exempted from dunning, if they are exempt now.
    exempt_since: datetime | None
    decline_code: str | None = None
    advice_code: str | None = None
    touches: tuple[Touch, ...] = ()

    def outcome(self, end: datetime) -> Outcome:
        """What had become of it at ``end``."""
        if self.status == "paid" and (self.paid_at is None or self.paid_at < end):
            return "recovered"
        if self.status != "open" and self.settled_at is not None and self.settled_at < end:
            # Voided or written off before the end (a written-off invoice paid only after
            # the end was still written off at the end).
            return "unrecoverable"
        if self.exhausted_at is not None and self.exhausted_at < end:
            return "exhausted"
        return "open"

    def exempt(self, end: datetime) -> bool:
        """Whether its customer was exempt from dunning while it was being collected."""
        if self.exempt_since is None:
            return False
        outcome = self.outcome(end)
        if outcome == "recovered" and self.paid_at is not None:
            return self.exempt_since <= self.paid_at
        if outcome == "unrecoverable" and self.settled_at is not None:
            return self.exempt_since <= self.settled_at
        return self.exempt_since < end

    def last_touch(self) -> str:
        """The step or channel that came last before the payment."""
        if any(touch.kind == "manual_retry" for touch in self.touches):
            return MANUAL_RETRY
        before = [
            touch for touch in self.touches if self.paid_at is None or touch.at <= self.paid_at
        ]
        if not before:
            return BEFORE_ANY_MESSAGE
        return max(before, key=lambda touch: (touch.at, touch.label)).label

    @property
    def decline_class(self) -> DeclineClass:
        return classify_decline(self.decline_code, self.advice_code)

    def time_to_recover(self) -> timedelta | None:
        if self.paid_at is None:
            return None
        # A failure reported after the payment (Stripe keeps them apart) took no time.
        return max(self.paid_at - self.first_failed_at, timedelta(0))


def whole_seconds(span: timedelta | None) -> int | None:
    """A span in whole seconds (rounded down), as JSON and CSV give times to recover."""
    return None if span is None else span // timedelta(seconds=1)


def exact_pct(part: int, whole: int) -> Decimal | None:
    """``part / whole × 100`` with ``PCT_PLACES`` places, rounded half up, in integers
    only (no float, no precision context); None when ``whole`` is 0."""
    if whole == 0:
        return None
    scale = 10**PCT_PLACES
    numerator = abs(part) * 100 * scale
    rounded = (2 * numerator + whole) // (2 * whole)
    return Decimal(-rounded if part < 0 else rounded).scaleb(-PCT_PLACES)


def nearest_rank(sorted_values: list[timedelta], pct: int) -> timedelta | None:
    """The nearest-rank percentile of ascending values: the ``ceil(pct/100 × n)``-th."""
    if not sorted_values:
        return None
    rank = max(-(-pct * len(sorted_values) // 100), 1)
    return sorted_values[rank - 1]


@dataclass(slots=True)
class Tally:
    """Running totals of one row, added to invoice by invoice."""

    failed_invoices: int = 0
    failed_amount: int = 0
    recovered_invoices: int = 0
    recovered_amount: int = 0
    partially_paid_amount: int = 0
    open_invoices: int = 0
    open_amount: int = 0
    exhausted_invoices: int = 0
    exhausted_amount: int = 0
    unrecoverable_invoices: int = 0
    unrecoverable_amount: int = 0
    recovered_time_unknown: int = 0
    durations: list[timedelta] = field(default_factory=list)

    def add(self, invoice: FailedInvoice, outcome: Outcome) -> None:
        self.failed_invoices += 1
        self.failed_amount += invoice.amount_due
        if outcome == "recovered":
            self.recovered_invoices += 1
            self.recovered_amount += invoice.amount_due
            took = invoice.time_to_recover()
            if took is None:
                self.recovered_time_unknown += 1
            else:
                self.durations.append(took)
            return
        unpaid = invoice.amount_due - invoice.amount_paid
        self.partially_paid_amount += invoice.amount_paid
        if outcome == "unrecoverable":
            self.unrecoverable_invoices += 1
            self.unrecoverable_amount += unpaid
        elif outcome == "exhausted":
            self.exhausted_invoices += 1
            self.exhausted_amount += unpaid
        else:
            self.open_invoices += 1
            self.open_amount += unpaid


@dataclass(frozen=True, slots=True)
class RecoveryRow:
    """One row of the report (and of the ``recovery`` export), in one currency.

    ``breakdown`` ``all``: every failed invoice of the scope. ``touch``: the recovered
    invoices whose last touch is ``touch`` (only recovered figures apply, with their share
    of all recovered). ``decline``: the failed invoices whose last failure has this class
    and code.
    """

    currency: str
    scope: Scope
    breakdown: Breakdown
    touch: str | None
    decline_class: str | None
    decline_code: str | None
    failed_invoices: int | None
    failed_amount: int | None
    recovered_invoices: int
    recovered_amount: int
    recovery_rate_pct: Decimal | None
    share_of_recovered_pct: Decimal | None
    partially_paid_amount: int | None
    open_invoices: int | None
    open_amount: int | None
    exhausted_invoices: int | None
    exhausted_amount: int | None
    unrecoverable_invoices: int | None
    unrecoverable_amount: int | None
    median_time_to_recover: timedelta | None
    p90_time_to_recover: timedelta | None
    recovered_time_unknown: int


def _row(
    currency: str,
    scope: Scope,
    breakdown: Breakdown,
    tally: Tally,
    *,
    touch: str | None = None,
    decline: tuple[str, str] | None = None,
    recovered_in_scope: int = 0,
) -> RecoveryRow:
    durations = sorted(tally.durations)
    only_recovered = breakdown == "touch"

    def unless_touch(value: int) -> int | None:
        return None if only_recovered else value

    return RecoveryRow(
        currency=currency,
        scope=scope,
        breakdown=breakdown,
        touch=touch,
        decline_class=None if decline is None else decline[0],
        decline_code=None if decline is None else decline[1],
        failed_invoices=unless_touch(tally.failed_invoices),
        failed_amount=unless_touch(tally.failed_amount),
        recovered_invoices=tally.recovered_invoices,
        recovered_amount=tally.recovered_amount,
        recovery_rate_pct=None
        if only_recovered
        else exact_pct(tally.recovered_amount, tally.failed_amount),
        share_of_recovered_pct=exact_pct(tally.recovered_amount, recovered_in_scope)
        if only_recovered
        else None,
        partially_paid_amount=unless_touch(tally.partially_paid_amount),
        open_invoices=unless_touch(tally.open_invoices),
        open_amount=unless_touch(tally.open_amount),
        exhausted_invoices=unless_touch(tally.exhausted_invoices),
        exhausted_amount=unless_touch(tally.exhausted_amount),
        unrecoverable_invoices=unless_touch(tally.unrecoverable_invoices),
        unrecoverable_amount=unless_touch(tally.unrecoverable_amount),
        median_time_to_recover=nearest_rank(durations, 50),
        p90_time_to_recover=nearest_rank(durations, 90),
        recovered_time_unknown=tally.recovered_time_unknown,
    )


def _touch_order(label: str) -> tuple[int, int, str]:
    """Before any message first, the timeline's steps by day, then operators' actions."""
    if label == BEFORE_ANY_MESSAGE:
        return (0, 0, label)
    if label.startswith("day "):
        day, _, channel = label[4:].partition(" ")
        return (1, int(day), channel)
    return (2, 0 if label == PAY_LINK_RESENT else 1, label)


@dataclass(slots=True)
class _Currency:
    dunned: Tally = field(default_factory=Tally)
    exempt: Tally = field(default_factory=Tally)
    by_touch: dict[str, Tally] = field(default_factory=dict)
    by_decline: dict[tuple[str, str], Tally] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    window: Window
    rows: tuple[RecoveryRow, ...]

    @property
    def currencies(self) -> list[str]:
        return list(dict.fromkeys(row.currency for row in self.rows))

    def total(self, currency: str, scope: Scope = "dunned") -> RecoveryRow:
        """The ``all`` row of one currency and scope."""
        return next(
            row
            for row in self.rows
            if row.currency == currency and row.scope == scope and row.breakdown == "all"
        )


def recovery_report(invoices: Iterable[FailedInvoice], window: Window) -> RecoveryReport:
    """The figures per currency (never summed across currencies) of the invoices whose
    first failure lies in ``window``; others are ignored."""
    currencies: dict[str, _Currency] = {}
    for invoice in invoices:
        if invoice.first_failed_at not in window:
            continue
        figures = currencies.setdefault(invoice.currency, _Currency())
        outcome = invoice.outcome(window.end)
        if invoice.exempt(window.end):
            figures.exempt.add(invoice, outcome)
            continue
        figures.dunned.add(invoice, outcome)
        if outcome == "recovered":
            figures.by_touch.setdefault(invoice.last_touch(), Tally()).add(invoice, outcome)
        decline = (invoice.decline_class, invoice.decline_code or NO_DECLINE_CODE)
        figures.by_decline.setdefault(decline, Tally()).add(invoice, outcome)
    rows: list[RecoveryRow] = []
    for currency in sorted(currencies):
        figures = currencies[currency]
        rows.append(_row(currency, "dunned", "all", figures.dunned))
        if figures.exempt.failed_invoices:
            rows.append(_row(currency, "exempt", "all", figures.exempt))
        for label in sorted(figures.by_touch, key=_touch_order):
            rows.append(
                _row(
                    currency,
                    "dunned",
                    "touch",
                    figures.by_touch[label],
                    touch=label,
                    recovered_in_scope=figures.dunned.recovered_amount,
                )
            )
        for kind_and_code in sorted(
            figures.by_decline, key=lambda key: (_DECLINE_ORDER[key[0]], key[1])
        ):
            tally = figures.by_decline[kind_and_code]
            rows.append(_row(currency, "dunned", "decline", tally, decline=kind_and_code))
    return RecoveryReport(window=window, rows=tuple(rows))
