"""Store operations: quarantined Stripe events (``billing_quarantined_events``).

Events are quarantined by ``MirrorOps.apply_event_plans``, in the transaction of their
batch; these operations list them and settle them, each settlement audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.domain.dunning import DunningPlanner
    from cloudgreet_billing.domain.events import EventPlan, EventResult
    from cloudgreet_billing.domain.quarantine import QuarantinedEvent, RejectedEvent


class QuarantineOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    def list_quarantined(
        self,
        *,
        statuses: Sequence[str] | None = ("quarantined",),
        limit: int | None = 50,
        after: int | None = None,
        event_id: str | None = None,
    ) -> list[QuarantinedEvent]:
        """Rows in these statuses (``None``: all), oldest first; only those numbered after
        ``after``, or only those of one ``event_id``, when given."""
        ...

    def get_quarantined(self, quarantine_id: int) -> QuarantinedEvent | None: ...

    def count_quarantined(self, statuses: Sequence[str] | None = ("quarantined",)) -> int:
        """How many events are in these statuses (``None``: all); by default, how many
        wait in quarantine."""
        ...

    def retry_quarantined(
        self,
        quarantine_id: int,
        attempt: EventPlan | RejectedEvent,
        *,
        planner: DunningPlanner,
        now: datetime,
        actor: str,
    ) -> EventResult:
        """Settle one row with the outcome of planning its payload again, in one
        transaction with an audit line (``quarantine.retry``).

        A plan is applied as ``apply_event_plans`` applies it (``applied``, ``skipped``,
        or ``duplicate`` when the event was processed meanwhile), and the row becomes
        ``applied``; if the store refuses it, or ``attempt`` is a rejection, the row stays
        ``quarantined`` with the new reason (``quarantined``).
        """
        ...

    def dismiss_quarantined(
        self, quarantine_id: int, *, reason: str | None, actor: str, now: datetime
    ) -> QuarantinedEvent:
        """Give up on a quarantined event: the row becomes ``dismissed`` (kept, payload
        and all), with an audit line (``quarantine.dismiss``). ``NotFound`` for an unknown
        id; ``BadInput`` for a row no longer quarantined."""
        ...
