"""Shapes shared by several commands: JSON dictionaries and table cells."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.domain.money import format_money
from cloudgreet_billing.domain.timefmt import iso_z

if TYPE_CHECKING:
    from cloudgreet_billing.domain.alerts import Alert, AlertNote
    from cloudgreet_billing.domain.dunning import DunningStep
    from cloudgreet_billing.domain.ledger import LedgerEntry


def ledger_entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "customer_id": entry.customer_id,
        "kind": entry.kind,
        "amount": entry.amount,
        "currency": entry.currency,
        "occurred_at": iso_z(entry.occurred_at),
        "invoice_id": entry.invoice_id,
        "description": entry.description,
        "external_id": entry.external_id,
        "created_at": iso_z(entry.created_at),
    }


def when(moment: datetime | None) -> str:
    """A time for a table cell: ``2026-11-24 01:27 UTC``."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def money(amount: int | None, currency: str | None) -> str:
    return "" if amount is None or currency is None else format_money(amount, currency)


def dunning_step_json(step: DunningStep) -> dict[str, Any]:
    """A dunning step as the contract shows it (plus why it was skipped or needs review)."""
    return {
        "id": step.id,
        "invoice_id": step.invoice_id,
        "customer_id": step.customer_id,
        "alert_id": step.alert_id,
        "day": step.day,
        "channel": step.channel,
        "status": step.status,
        "due_at": iso_z(step.due_at),
        "sent_at": iso_z(step.sent_at),
        "attempts": step.attempts,
        "last_error": step.last_error,
        "reason": step.reason,
        "provider_message_id": step.provider_message_id,
        "may_have_been_sent": step.may_have_been_sent,
    }


def alert_json(alert: Alert, notes: Sequence[AlertNote]) -> dict[str, Any]:
    """An alert with exactly the contract's fields."""
    return {
        "id": alert.id,
        "type": alert.type,
        "status": alert.status,
        "customer_id": alert.customer_id,
        "invoice_id": alert.invoice_id,
        "amount_due": alert.amount_due,
        "currency": alert.currency,
        "stripe_event_id": alert.stripe_event_id,
        "created_at": iso_z(alert.created_at),
        "updated_at": iso_z(alert.updated_at),
        "resolved_at": iso_z(alert.resolved_at),
        "resolution": alert.resolution,
        "notes": [
            {"author": note.author, "body": note.body, "created_at": iso_z(note.created_at)}
            for note in notes
        ],
    }
