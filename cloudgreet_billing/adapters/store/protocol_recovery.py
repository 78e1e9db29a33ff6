"""Store operations: what the recovery figures (``dunning report``) read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.domain.reconciliation import Window
    from cloudgreet_billing.domain.recovery import FailedInvoice


class RecoveryOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    def failed_invoices(self, window: Window) -> Iterator[FailedInvoice]:
        """Mirrored invoices whose first failure (``first_failed_at``) lies in the window,
        by id, streamed: each with its settlement and payment time, its escalation, its
        customer's exemption, its last decline and advice codes, and its touches (dunning
        steps sent, pay links resent, a manual retry that paid it)."""
        ...
