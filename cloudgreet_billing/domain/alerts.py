"""Alerts: what needs a person, and the rules for moving one between its states.

An alert is ``open`` when raised, ``acknowledged`` when someone took it, ``resolved`` when
the problem went away (the invoice was paid, voided, written off) or a person closed it.
``dedupe_key`` names "the same problem" (``invoice_failed:in_123``): the store keeps at most
one unresolved alert per key, so a repeated failure updates the open alert instead of
raising another, and a failure after a resolution raises a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cloudgreet_billing.domain.inputs import shown
from cloudgreet_billing.errors import BadInput

if TYPE_CHECKING:
    from cloudgreet_billing.domain.mirror import MirroredInvoice

ALERT_TYPES: Final = (
    "invoice_failed",
    "payment_action_required",
    "threshold_exceeded",
    "dunning_exhausted",
    "dunning_undeliverable",
)
ALERT_STATUSES: Final = ("open", "acknowledged", "resolved")
#: Statuses of an alert still waiting for someone.
UNRESOLVED_STATUSES: Final = ("open", "acknowledged")


@dataclass(frozen=True, slots=True)
class AlertNote:
    author: str
    body: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Alert:
    """A row of ``billing_alerts``."""

    id: int
    type: str
    status: str
    dedupe_key: str
    customer_id: str | None
    invoice_id: str | None
    amount_due: int | None
    currency: str | None
    stripe_event_id: str | None
    attempt_count: int
    last_failure: str | None
    details: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    resolution: str | None


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """An alert to raise, or to update when one with the same key is still unresolved."""

    type: str
    dedupe_key: str
    customer_id: str | None = None
    invoice_id: str | None = None
    amount_due: int | None = None
    currency: str | None = None
    stripe_event_id: str | None = None
    attempt_count: int = 0
    last_failure: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def invoice_alert_key(alert_type: str, invoice_id: str) -> str:
    return f"{alert_type}:{invoice_id}"


def invoice_alert(
    alert_type: str,
    invoice: MirroredInvoice,
    *,
    attempt_count: int,
    last_failure: str,
    details: Mapping[str, Any],
    stripe_event_id: str | None = None,
) -> AlertDraft:
    """An alert about an invoice: keyed by the invoice, and carrying its customer, the
    amount still owed and its currency."""
    return AlertDraft(
        type=alert_type,
        dedupe_key=invoice_alert_key(alert_type, invoice.id),
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        amount_due=invoice.amount_owed,
        currency=invoice.currency,
        stripe_event_id=stripe_event_id,
        attempt_count=attempt_count,
        last_failure=last_failure,
        details=details,
    )


def check_alert_type(value: str) -> str:
    if value not in ALERT_TYPES:
        raise BadInput(
            f"unknown alert type {shown(value)}", hint=f"use one of {', '.join(ALERT_TYPES)}"
        )
    return value


def check_status_filter(value: str) -> tuple[str, ...] | None:
    """``--status`` as the statuses to list (``all`` means no filter)."""
    if value == "all":
        return None
    if value not in ALERT_STATUSES:
        raise BadInput(
            f"unknown alert status {shown(value)}",
            hint=f"use one of {', '.join(ALERT_STATUSES)} or all",
        )
    return (value,)


def parse_alert_id(raw: str) -> int:
    """An alert id as typed on the command line (``12``)."""
    from cloudgreet_billing.domain.inputs import parse_row_id

    return parse_row_id(
        raw, what="an alert id", hint="alert ids are numbers from 1 up: see alerts list"
    )


def acknowledge_allowed(status: str) -> bool:
    """Only an open alert can be acknowledged (acknowledging twice is a no-op)."""
    return status in UNRESOLVED_STATUSES
