"""Stripe → store: apply events from any source, pull the Events API, backfill the mirror.

Every source goes through ``apply_events``: events are planned (``domain.events``) and
applied in batches of ``BATCH_SIZE``, one transaction per batch (``Store.apply_event_plans``;
a batch with a failing event is redone with one savepoint per event), so an event's effects
and the record that it was processed commit together, and the same event twice changes
nothing. An event that cannot be applied (planning refuses it, or the store does) is
quarantined in its batch's transaction, and the others are applied; only a fault of the
store itself (``Unavailable``) stops a sync.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from cloudgreet_billing.adapters.payments import PagesRead, PaymentGateway
from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.adapters.store.sql_base import chunked
from cloudgreet_billing.domain.dunning import DunningPlanner, TimelinePlanner
from cloudgreet_billing.domain.events import EventPlan, EventResult, EventSource, plan_event
from cloudgreet_billing.domain.mirror import parse_customer, parse_invoice, parse_subscription
from cloudgreet_billing.domain.quarantine import (
    QuarantinedEvent,
    RejectedEvent,
    reject,
    reject_text,
)
from cloudgreet_billing.domain.timefmt import iso_z, parse_instant
from cloudgreet_billing.errors import BadInput, BillingError
from cloudgreet_billing.services import Listing, Progress
from cloudgreet_billing.services.dunning.reach import resolve_reached
from cloudgreet_billing.services.events import UnreadableValue
from cloudgreet_billing.services.payment_failures import complete_plan

#: Events per transaction: large enough to amortise the commit, small enough that a crash
#: loses little work and a webhook waiting on the write lock waits little.
BATCH_SIZE: Final = 500
#: ``billing_settings`` key of the Events API cursor: the ``created`` time (ISO) of the
#: newest event before which every pulled event has been applied.
CURSOR_KEY: Final = "stripe.events_cursor"
#: ``billing_settings`` key of when a sync last finished (ISO), for the dashboard's warning.
LAST_SYNC_KEY: Final = "sync.last_synced_at"
#: Failures listed one by one in the report; past this only their count is kept.
MAX_LISTED_FAILURES: Final = 100
#: Quarantined events listed in a sync's report; past this only their count.
MAX_LISTED_QUARANTINED: Final = 100
#: How far back the Events API lists events (https://docs.stripe.com/api/events): the
#: window a first sync, with no cursor, reads.
EVENTS_KEPT: Final = timedelta(days=30)
_Parsed = TypeVar("_Parsed")


@dataclass
class SyncReport:
    """What a sync did, in the contract's words (``sync --json``)."""

    events_seen: int = 0
    events_applied: int = 0
    events_skipped: int = 0
    events_duplicate: int = 0
    events_failed: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0
    dunning_scheduled: int = 0
    dunning_canceled: int = 0
    cursor: datetime | None = None
    invoices_backfilled: int = 0
    subscriptions_backfilled: int = 0
    customers_backfilled: int = 0
    #: Listed objects (``sync --backfill``) whose fields could not be read: ``id: reason``.
    #: Each is left out, and the rest mirrored.
    unreadable: list[str] = field(default_factory=list)
    #: This run's events that could not be applied (each quarantined): ``evt_…: reason``.
    failures: list[str] = field(default_factory=list)
    #: ``created`` of the newest event settled (applied, skipped, duplicate or quarantined).
    applied_through: datetime | None = None
    #: Every event waiting in quarantine after the run, from this run or earlier ones.
    quarantined: list[QuarantinedEvent] = field(default_factory=list)
    quarantined_count: int = 0

    def count(self, result: EventResult) -> None:
        self.events_seen += 1
        if result.created is not None:
            self.applied_through = max(self.applied_through or result.created, result.created)
        if result.status == "quarantined":
            self.events_failed += 1
            if len(self.failures) < MAX_LISTED_FAILURES:
                name = result.event_id or f"quarantined event {result.quarantine_id}"
                self.failures.append(f"{name}: {result.error}")
            return
        if result.status == "applied":
            self.events_applied += 1
        elif result.status == "skipped":
            self.events_skipped += 1
        else:
            self.events_duplicate += 1
        self.alerts_opened += result.alerts_opened
        self.alerts_resolved += result.alerts_resolved
        self.dunning_scheduled += result.dunning_scheduled
        self.dunning_canceled += result.dunning_canceled

    @property
    def needs_attention(self) -> bool:
        """Events wait in quarantine: exit 4 until an operator retries or dismisses them."""
        return self.quarantined_count > 0 or self.events_failed > 0 or bool(self.unreadable)

    def as_json(self) -> dict[str, Any]:
        return {
            "events_seen": self.events_seen,
            "events_applied": self.events_applied,
            "events_skipped": self.events_skipped,
            "alerts_opened": self.alerts_opened,
            "alerts_resolved": self.alerts_resolved,
            "dunning_scheduled": self.dunning_scheduled,
            "dunning_canceled": self.dunning_canceled,
            "cursor": iso_z(self.cursor),
            "events_duplicate": self.events_duplicate,
            "events_failed": self.events_failed,
            "failures": list(self.failures),
            "invoices_backfilled": self.invoices_backfilled,
            "subscriptions_backfilled": self.subscriptions_backfilled,
            "quarantined_count": self.quarantined_count,
            "quarantined": [quarantined_json(row) for row in self.quarantined],
            "customers_backfilled": self.customers_backfilled,
            "objects_unreadable": len(self.unreadable),
            "unreadable": self.unreadable[:MAX_LISTED_FAILURES],
        }


def quarantined_json(row: QuarantinedEvent) -> dict[str, Any]:
    """A quarantined event as ``sync`` and ``quarantine list`` show it (payload aside)."""
    return {
        "id": row.id,
        "event_id": row.event_id,
        "type": row.type,
        "status": row.status,
        "reason": row.reason,
        "source": row.source,
        "stripe_created": iso_z(row.stripe_created),
        "livemode": row.livemode,
        "times_seen": row.times_seen,
        "first_seen_at": iso_z(row.first_seen_at),
        "last_seen_at": iso_z(row.last_seen_at),
        "resolved_at": iso_z(row.resolved_at),
        "resolved_by": row.resolved_by,
        "resolution": row.resolution,
    }


def apply_events(
    store: Store,
    events: Iterable[Any],
    *,
    source: EventSource,
    now: datetime,
    planner: DunningPlanner | None = None,
    progress: Progress | None = None,
    report: SyncReport | None = None,
    gateway: Callable[[], PaymentGateway | None] = lambda: None,
) -> SyncReport:
    """Apply events in order, ``BATCH_SIZE`` per transaction; each value that is not an
    event we can apply (``UnreadableValue`` included) is quarantined in its batch. Where
    ``gateway`` gives one, a decline the event leaves out is read from Stripe
    (``services.payment_failures``); it is asked only for an event that needs it.

    ``Unavailable`` when the store fails; the batches before it stay applied (and counted
    in ``report``, when given)."""
    report = report if report is not None else SyncReport()
    planner = planner or TimelinePlanner()
    for batch in chunked(events, BATCH_SIZE):
        plans: list[EventPlan] = []
        rejected: list[RejectedEvent] = []
        for value in batch:
            if isinstance(value, UnreadableValue):
                rejected.append(reject_text(value.text, value.reason, source))
                continue
            try:
                plans.append(complete_plan(plan_event(value, source), gateway))
            except BadInput as exc:
                rejected.append(reject(value, exc.message, source))
        results = store.apply_event_plans(plans, planner=planner, now=now, rejected=rejected)
        for result in results:
            report.count(result)
        if progress is not None:
            progress(len(batch))
    if report.events_applied:
        _resolve_reached(store, report, now)
    return report


def note_quarantine(store: Store, report: SyncReport) -> SyncReport:
    """Add what waits in quarantine to ``report`` (every sync lists it, and exits 4)."""
    report.quarantined_count = store.count_quarantined()
    if report.quarantined_count:
        report.quarantined = store.list_quarantined(limit=MAX_LISTED_QUARANTINED)
    return report


def _resolve_reached(store: Store, report: SyncReport, now: datetime) -> None:
    """A customer's or invoice's contact may have arrived: an unpaid invoice that dunning
    could not reach before may be reachable now (``services.dunning.reach``)."""
    report.alerts_resolved += len(resolve_reached(store, actor="stripe:sync", now=now))


def record_sync(store: Store, *, now: datetime, actor: str) -> None:
    """Remember that a sync finished now, whatever its source."""
    store.put_setting(LAST_SYNC_KEY, iso_z(now), actor, now)


def stored_cursor(store: Store) -> datetime | None:
    value = store.get_setting(CURSOR_KEY)
    return parse_instant(value, field=CURSOR_KEY) if isinstance(value, str) else None


def sync_events(
    store: Store,
    gateway: PaymentGateway,
    *,
    now: datetime,
    actor: str,
    since: datetime | None = None,
    planner: DunningPlanner | None = None,
    progress: Progress | None = None,
    listing: Listing | None = None,
) -> SyncReport:
    """Pull the Events API from the stored cursor (or ``since``), oldest first, and apply.

    ``listing`` hears how far the pages reach back from now towards the window's start
    (the cursor, or Stripe's 30 days of events); ``progress``, how many events are applied.

    The cursor only moves forward: past every event settled, quarantined ones included (an
    operator takes those from quarantine, the next sync need not meet them again). Only a
    fault of the store holds it back: it then stays after the last batch committed.
    """
    cursor = stored_cursor(store)
    start = since if since is not None else cursor
    # A later --since skips events; the stored cursor must not jump over them.
    contiguous = since is None or cursor is None or since <= cursor

    def advance() -> datetime | None:
        advanced = report.applied_through
        if contiguous and advanced is not None and (cursor is None or advanced > cursor):
            store.put_setting(CURSOR_KEY, iso_z(advanced), actor, now)
            return advanced
        return cursor

    report = SyncReport()
    try:
        apply_events(
            store,
            gateway.list_events(
                created_after=start,
                on_page=None if listing is None else _share_of_window(listing, start, now),
            ),
            source="api",
            now=now,
            planner=planner,
            progress=progress,
            report=report,
            gateway=lambda: gateway,
        )
    except BillingError:
        # Keep the batches committed before the failure; the store may refuse this too.
        with contextlib.suppress(Exception):
            advance()
        raise
    report.cursor = advance()
    return report


def _share_of_window(listing: Listing, start: datetime | None, now: datetime) -> PagesRead:
    """Pages read, as the share of the window from ``now`` back to ``start`` they cover."""
    oldest = start if start is not None else now - EVENTS_KEPT
    span = (now - oldest).total_seconds()

    def on_page(read: int, reached: datetime) -> None:
        covered = (now - reached).total_seconds() / span if span > 0 else 1.0
        listing(read, min(max(covered, 0.0), 1.0))

    return on_page


def _listed(report: SyncReport, obj: Any, parse: Callable[[Any], _Parsed]) -> _Parsed | None:
    """A listed object parsed, or None, noted, when a field cannot be read: one bad
    object must not keep every other one from the mirror."""
    try:
        return parse(obj)
    except BadInput as error:
        report.unreadable.append(error.message)
        return None


def backfill(
    store: Store,
    gateway: PaymentGateway,
    *,
    now: datetime,
    progress: Progress | None = None,
) -> SyncReport:
    """Mirror every customer, invoice and subscription by listing them (events reach back
    30 days; a webhook may send invoice events alone, and dunning needs the customers'
    contacts).

    Listed objects are observed ``now``: an event created before the listing never
    overwrites what the listing showed.
    """
    report = SyncReport(cursor=stored_cursor(store))
    for obj in gateway.list_customers():
        customer = _listed(report, obj, parse_customer)
        if customer is not None:
            store.upsert_customer(customer, now, now)
            report.customers_backfilled += 1
        if progress is not None:
            progress(1)
    for batch in chunked(gateway.list_invoices(), BATCH_SIZE):
        invoices = [i for i in (_listed(report, obj, parse_invoice) for obj in batch) if i]
        store.upsert_invoices(invoices, now, now)
        report.invoices_backfilled += len(invoices)
        if progress is not None:
            progress(len(batch))
    for obj in gateway.list_subscriptions():
        subscription = _listed(report, obj, parse_subscription)
        if subscription is not None:
            store.upsert_subscription(subscription, now, now)
            report.subscriptions_backfilled += 1
        if progress is not None:
            progress(1)
    _resolve_reached(store, report, now)
    return report
