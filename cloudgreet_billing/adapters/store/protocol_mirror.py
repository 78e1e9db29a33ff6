"""Store operations: the local mirror of Stripe invoices, subscriptions and customers.

``observed_at`` is the ``created`` time of the event that carried the object (or the
listing time for a backfill): a row is only replaced by an observation at least as new,
and a settled invoice is never reopened (``domain.mirror.invoice_transition_allowed``).
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
        self, plans: Sequence[EventPlan], *, planner: DunningPlanner, now: datetime
    ) -> list[EventResult]:
        """Apply events in one transaction, each in its own savepoint, each together with
        the record that it was processed (``billing_stripe_events``).

        An event already recorded changes nothing (``duplicate``); concurrent deliveries of
        one event serialise on its primary key. An event whose effects fail is rolled back
        alone, left unrecorded (``failed``) and so retried on its next delivery. Opening an
        ``invoice_failed`` alert schedules the steps ``planner`` returns; settling an invoice
        resolves its alerts and cancels its pending steps.
        """
        ...

    def event_processed(self, event_id: str) -> bool: ...

    def last_event_processed_at(self) -> datetime | None:
        """When the newest processed event was applied (any source)."""
        ...
