"""Store operations: finance read models: reconciliation totals, dashboard figures, CSV exports.

Sums are computed in the database (``GROUP BY``), never by loading rows into Python, and
exports stream: nothing here holds a whole table in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.domain.ledger import LedgerEntry
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription
    from cloudgreet_billing.domain.reconciliation import TotalsKey, Window


@dataclass(frozen=True, slots=True)
class PastDueInvoice:
    """An open invoice whose due date has passed or whose payment has failed."""

    id: str
    customer_id: str
    number: str | None
    currency: str
    amount_due: int
    amount_remaining: int
    due_date: datetime | None
    attempt_count: int
    first_failed_at: datetime | None
    hosted_invoice_url: str | None


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert still open, as finance reports list it."""

    id: int
    type: str
    status: str
    customer_id: str | None
    invoice_id: str | None
    amount_due: int | None
    currency: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DunningWorkload:
    """Dunning steps waiting for someone: due by a moment, and flagged for review."""

    due: int
    needs_review: int


class FinanceOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    # --- reconciliation -------------------------------------------------------
    def ledger_window_totals(
        self, window: Window, customer_id: str | None = None
    ) -> dict[TotalsKey, int]:
        """Ledger sums per (customer, currency) of entries that occurred in the window."""
        ...

    def mirror_invoice_totals(
        self, window: Window, customer_id: str | None = None
    ) -> dict[TotalsKey, int]:
        """Invoiced sums (``total_excluding_tax``, else ``total``) per (customer, currency) of
        mirrored invoices created in the window, drafts and voids excluded."""
        ...

    def mirror_invoice_count(self, window: Window, customer_id: str | None = None) -> int:
        """How many mirrored invoices ``mirror_invoice_totals`` adds up."""
        ...

    def mirror_invoices(self, window: Window, customer_id: str) -> list[MirroredInvoice]:
        """One customer's mirrored invoices created in the window (every status), oldest first."""
        ...

    def ledger_entries(self, window: Window, customer_id: str) -> list[LedgerEntry]:
        """One customer's entries in the window, oldest first."""
        ...

    def ledger_sums_by_invoice(self, invoice_ids: Sequence[str]) -> dict[tuple[str, str], int]:
        """Ledger sums per (invoice_id, currency) over all time for these invoices."""
        ...

    def past_due_invoices(self, now: datetime) -> list[PastDueInvoice]:
        """Open invoices with ``due_date`` before ``now`` or a failed attempt, oldest due first."""
        ...

    def open_alerts(self) -> list[OpenAlert]:
        """Alerts with status ``open``, oldest first."""
        ...

    # --- dashboard ------------------------------------------------------------
    def ledger_kind_totals(self, window: Window, kind: str) -> dict[str, int]:
        """Sums per currency of one kind of entry in the window."""
        ...

    def open_alert_counts(self) -> dict[str, int]:
        """Open alerts per type."""
        ...

    def past_due_totals(self, now: datetime) -> tuple[int, dict[str, int]]:
        """How many invoices are past due, and their amount remaining per currency."""
        ...

    def dunning_workload(self, due_before: datetime) -> DunningWorkload:
        """Scheduled steps due before a moment, and steps needing review."""
        ...

    def recurring_subscriptions(self) -> Iterator[MirroredSubscription]:
        """Mirrored subscriptions whose status can count towards MRR (streamed)."""
        ...

    # --- exports (streamed) -----------------------------------------------------
    def stream_ledger(self, window: Window) -> Iterator[LedgerEntry]:
        """Entries with ``occurred_at`` in the window, oldest first."""
        ...

    def ledger_csv_chunks(self, window: Window) -> Iterator[tuple[str, int]]:
        """The ledger export's body, ``domain.export.ledger_line`` for every entry of
        ``stream_ledger``, as (chunk of whole lines, how many rows it holds). Dialects build
        the lines in the database."""
        ...

    def stream_alerts(self, window: Window) -> Iterator[dict[str, Any]]:
        """Alerts created in the window, oldest first, keyed by column name."""
        ...

    def stream_dunning(self, window: Window) -> Iterator[dict[str, Any]]:
        """Dunning steps due in the window, earliest first, keyed by column name."""
        ...

    def export_row_count(self, dataset: str, window: Window) -> int | None:
        """How many rows ``ledger``, ``alerts`` or ``dunning`` holds in the window (what
        the stream above would give now), for a progress bar; None for another dataset."""
        ...
