"""Quarantined Stripe events: list them, retry them with today's code, or dismiss them.

``sync`` and ``serve`` quarantine what they cannot apply (``services.sync.apply_events``);
here an operator settles each one. A retry decodes and plans the stored payload again,
so a fix to the parsers lets it through; the store applies it (or keeps it quarantined
with the new reason) and audits the attempt in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, cast

from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.domain.dunning import DunningPlanner
from cloudgreet_billing.domain.events import EventPlan, EventResult, EventSource, plan_event
from cloudgreet_billing.domain.quarantine import (
    QUARANTINE_STATUSES,
    QuarantinedEvent,
    RejectedEvent,
    decode_json,
    decode_payload,
    reject,
    reject_text,
)
from cloudgreet_billing.domain.stripe_fields import BIGINT_MAX, is_stripe_id, quote
from cloudgreet_billing.errors import BadInput, NotFound

#: Rows retried per read by ``retry --all`` (each retry is its own transaction).
RETRY_PAGE: Final = 100


def parse_quarantine_ref(given: str) -> int | str:
    """What an operator typed for a quarantined event: its number, or its ``evt_…`` id."""
    text = given.strip()
    if text.isascii() and text.isdigit():
        number = int(text) if len(text) <= 19 else BIGINT_MAX + 1
        if 0 < number <= BIGINT_MAX:
            return number
    elif is_stripe_id(text, "evt_"):
        return text
    raise BadInput(
        f"{quote(given)} is not a quarantined event's number or an event id (evt_…)",
        hint="see: cloudgreet-billing quarantine list",
    )


def find(store: Store, given: str) -> QuarantinedEvent:
    """The quarantined event ``given`` names (a number, or the newest row of an ``evt_`` id)."""
    ref = parse_quarantine_ref(given)
    if isinstance(ref, int):
        row = store.get_quarantined(ref)
    else:
        rows = store.list_quarantined(statuses=None, limit=None, event_id=ref)
        row = rows[-1] if rows else None
    if row is None:
        raise NotFound(
            f"no quarantined event {given.strip()}",
            hint="see: cloudgreet-billing quarantine list --status all",
        )
    return row


def check_status_filter(status: str) -> Sequence[str] | None:
    if status == "all":
        return None
    if status not in QUARANTINE_STATUSES:
        raise BadInput(
            f"unknown status {quote(status)}",
            hint=f"use one of {', '.join(QUARANTINE_STATUSES)} or all",
        )
    return (status,)


def shown_payload(row: QuarantinedEvent) -> Any:
    """The payload to show: the event as JSON when it reads back and writes again, else
    the stored text (JSON nested too deep for Python, or the text of unreadable JSON)."""
    try:
        value = decode_json(row.payload, what="the stored payload")
        json.dumps(value)
    except (BadInput, RecursionError):
        return row.payload
    return value


def replan(row: QuarantinedEvent) -> EventPlan | RejectedEvent:
    """The stored payload planned with today's code: a plan, or the rejection with its
    new reason."""
    source = cast(EventSource, row.source)
    try:
        event = decode_payload(row.payload)
    except BadInput as exc:
        return reject_text(row.payload, exc.message, source)
    try:
        return plan_event(event, source)
    except BadInput as exc:
        return reject(event, exc.message, source)


def retry(
    store: Store, row: QuarantinedEvent, *, planner: DunningPlanner, now: datetime, actor: str
) -> EventResult:
    """Plan and apply one quarantined (or dismissed) event again."""
    if row.status == "applied":
        raise BadInput(
            f"quarantined event {row.id} was already applied ({row.resolution})",
            code="already_settled",
        )
    return store.retry_quarantined(row.id, replan(row), planner=planner, now=now, actor=actor)


def retry_all(
    store: Store, *, planner: DunningPlanner, now: datetime, actor: str
) -> list[EventResult]:
    """Retry every event waiting in quarantine, oldest first, each once."""
    results: list[EventResult] = []
    after = None
    while rows := store.list_quarantined(limit=RETRY_PAGE, after=after):
        for row in rows:
            results.append(retry(store, row, planner=planner, now=now, actor=actor))
        after = rows[-1].id
    return results
