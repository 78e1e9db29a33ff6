"""Store operations: what the drift check (``sync --verify``) reads and repairs."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription


class DriftOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    def mirrored_invoices_created(
        self, since: datetime, until: datetime
    ) -> dict[str, MirroredInvoice]:
        """The mirror's invoices Stripe created in ``[since, until)``, by id."""
        ...

    def mirrored_subscriptions(self) -> dict[str, MirroredSubscription]:
        """Every mirrored subscription, by id."""
        ...

    def repair_invoice(
        self,
        invoice: MirroredInvoice,
        *,
        settle: str | None,
        audit: AuditDraft,
        now: datetime,
    ) -> MirroredInvoice | None:
        """Apply Stripe's current invoice as observed ``now`` (the mirror's transition rules
        still hold: a settled invoice is not reopened), with ``settle`` as the resolution
        of its alerts and pending dunning steps when it is settled, and ``audit``, in one
        transaction. Returns the row as it now stands."""
        ...

    def repair_subscription(
        self, subscription: MirroredSubscription, *, audit: AuditDraft, now: datetime
    ) -> MirroredSubscription | None:
        """Apply Stripe's current subscription as observed ``now``, with ``audit``, in one
        transaction. Returns the row as it now stands."""
        ...
