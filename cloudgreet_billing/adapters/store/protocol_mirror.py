"""Store operations: the local mirror of Stripe invoices, subscriptions and customers.

``observed_at`` is the ``created`` time of the event that carried the object (or the
listing time for a backfill). Observations are merged by ``domain.merge``'s rules, so
that their order does not matter: a row shows the observation with the largest key, an
invoice only moves forward and a settled one is never reopened.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.domain.dunning import DunningPlanner
    from cloudgreet_billing.domain.events import EventPlan, EventResult
    from cloudgreet_billing.domain.mirror import (
        MirroredCustomer,
        MirroredInvoice,
        MirroredSubscription,
    )
    from cloudgreet_billing.domain.quarantine import RejectedEvent


class MirrorOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    def upsert_invoice(
        self, invoice: MirroredInvoice, observed_at: datetime, now: datetime
    ) -> bool:
        """Insert or update; False when the mirror already holds a newer or settled state."""
        ...

    def upsert_invoices(
        self, invoices: Iterable[MirroredInvoice], observed_at: datetime, now: datetime
    ) -> int:
        """Upsert many in one transaction; returns how many rows changed."""
        ...

    def upsert_subscription(
        self, subscription: MirroredSubscription, observed_at: datetime, now: datetime
    ) -> bool: ...

    def upsert_customer(
        self, customer: MirroredCustomer, observed_at: datetime, now: datetime
    ) -> bool: ...

    def get_invoice(self, invoice_id: str) -> MirroredInvoice | None: ...

    def get_customer(self, customer_id: str) -> MirroredCustomer | None: ...

    def get_subscription(self, subscription_id: str) -> MirroredSubscription | None: ...

    # --- Stripe events --------------------------------------------------------------
    def apply_event_plans(
        self,
        plans: Sequence[EventPlan],
        *,
        planner: DunningPlanner,
        now: datetime,
        rejected: Sequence[RejectedEvent] = (),
    ) -> list[EventResult]:
        """Apply events in one transaction, each together with the record that it was
        processed (``billing_stripe_events``), and quarantine the ``rejected`` events
        (ones that could not be planned) in the same transaction. Results: one per plan,
        in order, then one per rejected event.

        An event already recorded changes nothing (``duplicate``); concurrent deliveries of
        one event serialise on its primary key. An event the store refuses (a constraint,
        a value out of range: the event's own fault) is rolled back alone and quarantined
        with the reason (``quarantined``), and the others are applied. A fault of the store
        itself (locked, unreachable, a serialization failure) rolls the whole batch back
        and raises ``Unavailable``: a retry can cure it. An event applied while it waits
        in quarantine (a fixed redelivery) settles its quarantine row. Opening an
        ``invoice_failed`` alert schedules the steps ``planner`` returns; settling an invoice
        resolves its alerts and cancels its pending steps.
        """
        ...

    def event_processed(self, event_id: str) -> bool: ...

    def last_event_processed_at(self) -> datetime | None:
        """When the newest processed event was applied (any source)."""
        ...
