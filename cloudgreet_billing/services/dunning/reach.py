"""Whom dunning can reach: unpaid invoices that no channel can deliver to, and their alerts.

An unpaid invoice in dunning *cannot be reached* when none of the channels its steps use
has a contact (``freshest_contact``: the mirrored customer's details or the invoice's own
copy), or when its customer was deleted in Stripe. A run skips such an invoice's due step
as undeliverable and opens its ``dunning_undeliverable`` alert; a step whose own channel
lacks a contact while another channel has one is only skipped, since the customer is
reached on that other channel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.domain.alerts import UNRESOLVED_STATUSES
from cloudgreet_billing.domain.dunning import InvoiceReach

UNDELIVERABLE: Final = "dunning_undeliverable"


def unreachable_invoices(store: Store) -> list[InvoiceReach]:
    """Unpaid invoices in dunning that no reminder can reach now, by invoice id."""
    return [reach for reach in store.dunning_reach() if reach.unreachable]


def resolve_reached(store: Store, *, actor: str, now: datetime) -> list[int]:
    """Resolve each unresolved ``dunning_undeliverable`` alert whose invoice's next reminder
    can now reach the customer (a contact appeared, or a person requeued a step on a channel
    that has one); returns their ids. An alert stays open while nothing still to be sent
    would reach anyone, so a skipped reminder is never forgotten."""
    alerts = store.list_alerts(
        AlertQuery(types=(UNDELIVERABLE,), statuses=UNRESOLVED_STATUSES, limit=None)
    )
    invoice_ids = [alert.invoice_id for alert in alerts if alert.invoice_id]
    if not invoice_ids:
        return []
    reaches = {reach.facts.invoice_id: reach for reach in store.dunning_reach(invoice_ids)}
    resolved: list[int] = []
    for alert in alerts:
        reach = reaches.get(alert.invoice_id or "")
        if reach is None or not reach.next_reminder_reaches:
            continue
        channels = " and ".join(sorted(reach.facts.reachable(reach.scheduled)))
        store.resolve_alert(
            alert.id,
            resolution=f"the customer can be reached again: the next reminder goes by {channels}",
            actor=actor,
            now=now,
        )
        resolved.append(alert.id)
    return resolved
