"""Store operations: alerts, their notes, and the transitions between their states.

Operator transitions (acknowledge, resolve, note) write their audit line in the same
transaction as the change, so the trail ``alerts show`` prints matches the alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.domain.alerts import Alert, AlertDraft, AlertNote


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters for ``list_alerts``; ``statuses=None`` means every status. ``since`` and
    ``until`` bound ``created_at`` (``until`` exclusive)."""

    types: Sequence[str] | None = None
    statuses: Sequence[str] | None = ("open",)
    customer_id: str | None = None
    invoice_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = 50


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    """What ``raise_alert`` did: the alert, and whether it is new (else it was updated)."""

    alert: Alert
    opened: bool


@dataclass(frozen=True, slots=True)
class LedgerTotal:
    """One customer's ledger entries of one kind and currency in a window."""

    customer_id: str
    currency: str
    amount: int
    entries: int


class AlertsOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    def get_alert(self, alert_id: int) -> Alert | None: ...

    def list_alerts(self, query: AlertQuery) -> list[Alert]:
        """Alerts newest first."""
        ...

    def count_alerts(self, query: AlertQuery) -> int:
        """How many alerts ``list_alerts`` would list with no ``limit``."""
        ...

    def alerts_touched(self, since: datetime, until: datetime) -> list[Alert]:
        """Alerts opened or resolved in ``[since, until)``, and every unresolved one,
        oldest first: what an incident summary tells."""
        ...

    def alert_notes(self, alert_id: int) -> list[AlertNote]:
        """Notes oldest first."""
        ...

    def alert_notes_for(self, alert_ids: Sequence[int]) -> dict[int, list[AlertNote]]:
        """Notes of several alerts at once (oldest first each), for listings."""
        ...

    def raise_alert(self, draft: AlertDraft, *, actor: str, now: datetime) -> RaisedAlert:
        """Open an alert, or update the unresolved one with the same ``dedupe_key``."""
        ...

    def acknowledge_alert(self, alert_id: int, *, actor: str, now: datetime) -> Alert | None:
        """Move an open alert to ``acknowledged`` (no-op when it already is); None when no
        alert has this id. A resolved alert is returned unchanged."""
        ...

    def resolve_alert(
        self, alert_id: int, *, resolution: str, actor: str, now: datetime
    ) -> Alert | None:
        """Resolve an unresolved alert; a resolved one is returned unchanged; None when no
        alert has this id."""
        ...

    def add_alert_note(
        self, alert_id: int, *, author: str, body: str, now: datetime
    ) -> AlertNote | None:
        """Append a note; None when no alert has this id."""
        ...

    def resolve_invoice_alerts(
        self, invoice_id: str, *, resolution: str, actor: str, now: datetime
    ) -> tuple[list[int], int]:
        """Resolve every unresolved alert of the invoice and cancel its pending dunning
        steps, in one transaction; returns (resolved alert ids, canceled steps)."""
        ...

    def ledger_totals(self, *, kind: str, since: datetime, until: datetime) -> list[LedgerTotal]:
        """Ledger sums per customer and currency for one kind in ``[since, until)``."""
        ...

    def ledger_created_window(self, created_at: datetime) -> tuple[datetime, datetime] | None:
        """The ``occurred_at`` range of the entries recorded at ``created_at`` (one import)."""
        ...
