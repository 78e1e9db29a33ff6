"""Alert use cases: list, show (with invoice, dunning steps, notes, audit), ack, resolve, note."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cloudgreet_billing.adapters.store.protocol import AuditRecord, Store
from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.domain.alerts import Alert, AlertNote
from cloudgreet_billing.domain.dunning import DunningStep
from cloudgreet_billing.domain.mirror import MirroredInvoice
from cloudgreet_billing.errors import BadInput, NotFound

if TYPE_CHECKING:
    from cloudgreet_billing.services.actions.common import Safety as SafetyGate

MAX_NOTE_LENGTH = 4000


@dataclass(frozen=True)
class AlertView:
    """An alert with its notes."""

    alert: Alert
    notes: Sequence[AlertNote]


@dataclass(frozen=True)
class AlertDetail:
    """Everything ``alerts show`` prints."""

    alert: Alert
    notes: Sequence[AlertNote]
    invoice: MirroredInvoice | None
    steps: Sequence[DunningStep]
    audit: Sequence[AuditRecord]


def audit_target(alert_id: int) -> str:
    """How audit-log rows name an alert."""
    return f"alert:{alert_id}"


def list_alerts(store: Store, query: AlertQuery) -> list[AlertView]:
    alerts = store.list_alerts(query)
    notes = store.alert_notes_for([alert.id for alert in alerts])
    return [AlertView(alert, notes.get(alert.id, [])) for alert in alerts]


def count_alerts(store: Store, query: AlertQuery) -> int:
    """How many alerts match ``query``, whatever its limit."""
    return store.count_alerts(query)


def newest_alert_of_invoice(store: Store, invoice_id: str) -> tuple[int, int]:
    """The newest alert of an invoice (any status) and how many the invoice has."""
    query = AlertQuery(statuses=None, invoice_id=invoice_id, limit=1)
    newest = store.list_alerts(query)
    if not newest:
        raise NotFound(
            f"no alert for invoice {invoice_id}",
            hint="see: cloudgreet-billing alerts list --status all",
        )
    return newest[0].id, store.count_alerts(query)


def _require(store: Store, alert_id: int) -> Alert:
    alert = store.get_alert(alert_id)
    if alert is None:
        raise NotFound(
            f"no alert {alert_id}", hint="see: cloudgreet-billing alerts list --status all"
        )
    return alert


def show_alert(store: Store, alert_id: int) -> AlertDetail:
    alert = _require(store, alert_id)
    invoice = store.get_invoice(alert.invoice_id) if alert.invoice_id else None
    steps = store.list_steps(invoice_id=alert.invoice_id, limit=None) if alert.invoice_id else []
    return AlertDetail(
        alert=alert,
        notes=store.alert_notes(alert_id),
        invoice=invoice,
        steps=steps,
        audit=alert_audit(store, alert),
    )


def alert_audit(store: Store, alert: Alert) -> list[AuditRecord]:
    """The alert's story, oldest first: its own lines (``alert:<id>``), every operator
    action on its invoice (``retry`` and ``resend-link`` write theirs keyed by the invoice
    id), and the ``portal`` lines for its customer (keyed by the customer id) that name the
    alert or its invoice."""
    found = {record.id: record for record in store.audit_trail(audit_target(alert.id))}
    if alert.invoice_id:
        found.update((record.id, record) for record in store.audit_trail(alert.invoice_id))
    if alert.customer_id:
        for record in store.audit_trail(alert.customer_id):
            if record.action == "portal" and _mentions(record, alert):
                found[record.id] = record
    return sorted(found.values(), key=lambda record: (record.occurred_at, record.id))


def _mentions(record: AuditRecord, alert: Alert) -> bool:
    details = record.details or {}
    if details.get("alert_id") == alert.id:
        return True
    return alert.invoice_id is not None and details.get("invoice_id") == alert.invoice_id


def acknowledge(
    store: Store, alert_id: int, *, actor: str, now: datetime
) -> tuple[AlertView, bool]:
    """Acknowledge an open alert; returns (view, changed). Acknowledging an acknowledged
    alert changes nothing (the CLI says "already acknowledged"); a resolved one is refused."""
    current = _require(store, alert_id)
    if current.status == "resolved":
        raise BadInput(
            f"alert {alert_id} is already resolved ({current.resolution or 'no reason given'})",
            code="alert_resolved",
        )
    if current.status == "acknowledged":
        return AlertView(current, store.alert_notes(alert_id)), False
    alert = store.acknowledge_alert(alert_id, actor=actor, now=now)
    assert alert is not None
    return AlertView(alert, store.alert_notes(alert_id)), alert.status == "acknowledged"


def acknowledged_by(store: Store, alert_id: int) -> str | None:
    """Who acknowledged the alert, from its audit trail (the last ``alert.ack``)."""
    acks = [r for r in store.audit_trail(audit_target(alert_id)) if r.action == "alert.ack"]
    return acks[-1].actor if acks else None


def resolve(
    store: Store,
    alert_id: int,
    *,
    reason: str | None,
    actor: str,
    now: datetime,
    safety: SafetyGate | None = None,
) -> tuple[AlertView, bool]:
    """Resolve an alert; returns (view, changed). Resolving a resolved alert changes
    nothing. Resolving one takes it off everyone's list, so it is confirmed (``safety``: a
    prompt on a terminal, ``--yes`` elsewhere, else exit 3), like the payment actions."""
    from cloudgreet_billing.services.actions.common import (
        AuditStory,
        ConfirmRequest,
        Safety,
        ask,
        customer_label,
        refuse_unconfirmed,
    )

    safety = safety or Safety()
    current = _require(store, alert_id)
    if current.status == "resolved":
        return AlertView(current, store.alert_notes(alert_id)), False
    resolution = (reason or "").strip() or f"resolved by {actor}"
    story = AuditStory.of(
        store, actor, "alert.resolve", audit_target(alert_id), safety, {"resolution": resolution}
    )
    what = f"resolving alert {alert_id} ({current.type})"
    refuse_unconfirmed(story, safety, what, hint="re-run with --yes, or on a terminal to be asked")
    invoice = store.get_invoice(current.invoice_id) if current.invoice_id else None
    ask(
        story,
        safety,
        ConfirmRequest(
            action="resolve",
            question=f"Resolve alert {alert_id} ({current.type}, {current.status}) as "
            f"{resolution!r}?",
            mode="",
            customer_id=current.customer_id,
            customer_label=customer_label(store, current.customer_id, invoice)
            if current.customer_id
            else None,
            invoice_id=current.invoice_id,
            amount=current.amount_due,
            currency=current.currency,
        ),
        nothing="the alert is unchanged",
    )
    alert = store.resolve_alert(alert_id, resolution=resolution, actor=actor, now=now)
    assert alert is not None
    return AlertView(alert, store.alert_notes(alert_id)), alert.status == "resolved"


def add_note(store: Store, alert_id: int, body: str, *, actor: str, now: datetime) -> AlertView:
    text = body.strip()
    if not text:
        raise BadInput("the note is empty", hint='give the text, e.g. alerts note 12 "called them"')
    if len(text) > MAX_NOTE_LENGTH:
        raise BadInput(f"the note is over {MAX_NOTE_LENGTH} characters")
    _require(store, alert_id)
    store.add_alert_note(alert_id, author=actor, body=text, now=now)
    alert = _require(store, alert_id)
    return AlertView(alert, store.alert_notes(alert_id))
