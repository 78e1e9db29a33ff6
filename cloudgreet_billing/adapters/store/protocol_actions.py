"""Store operations for operator actions (``retry``, ``resend-link``, ``portal``).

Each operation that records an action's outcome takes the outcome's audit line and writes
it in the same transaction as the state it describes, so the audit log never claims a
change the store does not hold, nor the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft, AuditRecord
    from cloudgreet_billing.domain.alerts import AlertDraft
    from cloudgreet_billing.domain.events import InvoiceFailure
    from cloudgreet_billing.domain.mirror import MirroredInvoice


@dataclass(frozen=True, slots=True)
class Settlement:
    """What recording a paid invoice changed."""

    resolved_alert_ids: tuple[int, ...]
    canceled_steps: int


def action_required_draft(
    invoice: MirroredInvoice, *, failure: str, audit: AuditDraft, now: datetime
) -> AlertDraft:
    """The alert ``open_action_required_alert`` opens or adds to, on every store. Its
    ``opened_by`` is unique per call: the store tells an insert from an update by it."""
    from cloudgreet_billing.domain.alerts import invoice_alert

    return invoice_alert(
        "payment_action_required",
        invoice,
        attempt_count=invoice.attempt_count,
        last_failure=failure,
        details={"opened_by": f"{audit.action}:{audit.idempotency_key}:{now.isoformat()}"},
    )


class ActionsOps(Protocol):
    """Part of ``SqlStore``; see ``sql_actions.py``. Alerts are read, resolved and noted
    through the alerts area (``AlertsOps``), whose own audit lines (``alert:<id>``) these
    operations keep."""

    def settle_paid_invoice(
        self, invoice: MirroredInvoice, *, resolution: str, audit: AuditDraft, now: datetime
    ) -> Settlement:
        """Mirror the paid invoice, resolve its alerts and cancel its pending dunning steps
        (``resolve_invoice_alerts``) and append ``audit`` (its details gain ``resolved_alerts`` and
        ``canceled_steps``), all in one transaction."""
        ...

    def record_failed_attempt(
        self,
        alert_id: int | None,
        *,
        attempt_count: int,
        failure: str,
        note: str,
        audit: AuditDraft,
        now: datetime,
        declined: tuple[str, InvoiceFailure] | None = None,
    ) -> None:
        """Keep the alert open with the attempt counted, its failure and a note; append
        ``audit``. Without an alert only the audit line is written. Stripe counts only the
        first manual attempt, so the alert's count is raised here: at least
        ``attempt_count``, and one more than it held. ``declined`` (``invoice_id``, the
        failure with its decline) is recorded on the mirrored invoice as a failure observed
        ``now`` (``domain.merge``), so the next retry knows the decline."""
        ...

    def open_action_required_alert(
        self, invoice: MirroredInvoice, *, failure: str, note: str, audit: AuditDraft, now: datetime
    ) -> int:
        """Open (or find) the invoice's ``payment_action_required`` alert, note why, append
        ``audit``; returns the alert id."""
        ...

    def note_alert(
        self, alert_id: int | None, *, author: str, body: str, audit: AuditDraft, now: datetime
    ) -> None:
        """Add a note to the alert's history (when there is one) and append ``audit``."""
        ...

    def action_audit(self, target: str, action: str) -> list[AuditRecord]:
        """Every audit line of ``action`` on ``target``, oldest first."""
        ...
