"""Operator commands: list, preview, mark-sent, requeue, pause, resume. Each is audited."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloudgreet_billing.adapters.store.protocol import AuditDraft, Store
from cloudgreet_billing.domain.dunning import (
    PAUSE_SETTING,
    DunningConfig,
    DunningStep,
    InvoiceFacts,
    PauseState,
)
from cloudgreet_billing.domain.inputs import parse_target
from cloudgreet_billing.domain.statuses import (
    MARK_SENT_FROM,
    OPEN_STATUSES,
    REQUEUE_FROM,
    STEP_STATUSES,
)
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.errors import BadInput, NotFound
from cloudgreet_billing.services.dunning.messages import MessageBook, MessageError, step_context


def _audit(
    store: Store,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    now: datetime,
    **details: Any,
) -> None:
    store.append_audit(
        AuditDraft(
            actor=actor,
            action=f"dunning.{action}",
            target=target,
            outcome=outcome,
            details=details,
        ),
        now,
    )


def step_target(step_id: int) -> str:
    """The audit-log target naming one step."""
    return f"dunning_step:{step_id}"


# --- pause ------------------------------------------------------------------------


def pause_state(store: Store) -> PauseState:
    return PauseState.from_setting(store.get_setting(PAUSE_SETTING))


def pause(store: Store, *, reason: str, actor: str, now: datetime) -> PauseState:
    """Stop every run from sending until ``resume``; records who and why."""
    if not reason.strip():
        raise BadInput(
            "--reason must say why dunning is paused", hint="e.g. --reason 'Stripe outage'"
        )
    state = PauseState(paused=True, reason=reason.strip(), actor=actor, at=iso_z(now))
    store.put_setting(
        PAUSE_SETTING,
        {"paused": True, "reason": state.reason, "actor": actor, "at": state.at},
        actor,
        now,
    )
    _audit(store, actor, "pause", "dunning", "paused", now, reason=state.reason)
    return state


def resume(store: Store, *, actor: str, now: datetime) -> tuple[PauseState, PauseState]:
    """Let runs send again; returns the state before and after."""
    before = pause_state(store)
    after = PauseState(paused=False, actor=actor, at=iso_z(now))
    store.put_setting(PAUSE_SETTING, {"paused": False, "actor": actor, "at": after.at}, actor, now)
    _audit(
        store,
        actor,
        "resume",
        "dunning",
        "resumed" if before.paused else "not_paused",
        now,
        paused_since=before.at,
        paused_by=before.actor,
        reason=before.reason,
    )
    return before, after


# --- list -------------------------------------------------------------------------


def list_steps(
    store: Store,
    *,
    status: str | None,
    invoice_id: str | None,
    limit: int,
    actor: str,
    now: datetime,
) -> list[DunningStep]:
    """Steps by due time. Default: every status for one invoice, else the unfinished ones."""
    statuses: Sequence[str] | None
    if status is None:
        statuses = None if invoice_id else OPEN_STATUSES
    elif status == "all":
        statuses = None
    elif status in STEP_STATUSES:
        statuses = (status,)
    else:
        raise BadInput(
            f"--status {status!r} is not a step status",
            hint=f"use one of {', '.join(STEP_STATUSES)}, or all",
        )
    if invoice_id is not None and not invoice_id.startswith("in_"):
        raise BadInput(f"--invoice {invoice_id!r} is not an invoice id", hint="use in_…")
    steps = store.list_steps(statuses=statuses, invoice_id=invoice_id, limit=limit)
    _audit(
        store,
        actor,
        "list",
        invoice_id or "dunning",
        "listed",
        now,
        status=status,
        count=len(steps),
    )
    return steps


# --- preview ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreviewMessage:
    step_id: int | None
    day: int
    channel: str
    template: str
    status: str
    to: str | None
    subject: str | None
    body: str | None
    error: str | None


def _resolve_invoice(store: Store, identifier: str) -> str:
    target = parse_target(identifier, prefixes=("in_",))
    if isinstance(target, str):
        return target
    steps = store.list_steps(alert_id=target, limit=1)
    if steps:
        return steps[0].invoice_id
    raise NotFound(f"alert {target} has no dunning steps")


def preview(
    store: Store,
    book: MessageBook,
    config: DunningConfig,
    identifier: str,
    *,
    actor: str,
    now: datetime,
) -> tuple[str, list[PreviewMessage]]:
    """Render every message the invoice's steps would send (or, if it has none yet, the
    configured timeline from today). A template naming a missing value is an error here,
    before any customer could receive a blank."""
    invoice_id = _resolve_invoice(store, identifier)
    facts = store.invoice_facts(invoice_id)
    steps = store.list_steps(invoice_id=invoice_id, limit=None)
    if not steps and facts is None:
        raise NotFound(
            f"invoice {invoice_id} is not in the local mirror and has no dunning steps",
            hint="run: cloudgreet-billing sync",
        )
    if not steps:
        assert facts is not None
        first_failed = facts.first_failed_at or now
        steps = [
            DunningStep(
                id=0,
                invoice_id=invoice_id,
                customer_id=facts.customer_id,
                alert_id=None,
                day=draft.day,
                channel=draft.channel,
                template=draft.template,
                status="planned",
                due_at=first_failed + timedelta(days=draft.day),
                sent_at=None,
                attempts=0,
                last_error=None,
            )
            for draft in config.timeline
        ]
    if facts is None:
        facts = InvoiceFacts(invoice_id=invoice_id, customer_id=steps[0].customer_id)
    messages: list[PreviewMessage] = []
    for step in steps:
        subject = body = error = None
        try:
            rendered = book.render(step.template, step.channel, step_context(step, facts))
            subject, body = rendered.subject, rendered.body
        except MessageError as exc:
            error = str(exc)
        messages.append(
            PreviewMessage(
                step_id=step.id or None,
                day=step.day,
                channel=step.channel,
                template=step.template,
                status=step.status,
                to=facts.contact(step.channel),
                subject=subject,
                body=body,
                error=error,
            )
        )
    errors = [f"day {m.day} {m.channel} ({m.template}): {m.error}" for m in messages if m.error]
    _audit(
        store,
        actor,
        "preview",
        invoice_id,
        "template_error" if errors else "rendered",
        now,
        messages=len(messages),
        errors=errors,
    )
    if errors:
        raise BadInput(
            f"{len(errors)} of {len(messages)} messages for {invoice_id} cannot be rendered",
            hint="fix the template or the missing value; nothing with a blank is ever sent",
            code="template_error",
            errors=errors,
        )
    return invoice_id, messages


# --- mark-sent / requeue ----------------------------------------------------------


def _existing_step(store: Store, step_id: int) -> DunningStep:
    step = store.get_step(step_id)
    if step is None:
        raise NotFound(f"dunning step {step_id} does not exist", hint="see: dunning list")
    return step


def mark_sent(store: Store, step_id: int, *, actor: str, now: datetime) -> DunningStep:
    """Record that a step's message did go out (checked by hand, e.g. after a crash)."""
    before = _existing_step(store, step_id)
    updated = store.mark_step_sent(step_id, MARK_SENT_FROM, f"marked sent by {actor}", now)
    if updated is None:
        _audit(
            store, actor, "mark_sent", step_target(step_id), "refused", now, status=before.status
        )
        raise BadInput(
            f"step {step_id} is {before.status}; only {', '.join(MARK_SENT_FROM)} steps "
            "can be marked sent",
            code="invalid_state",
        )
    _audit(store, actor, "mark_sent", step_target(step_id), "sent", now, was=before.status)
    return updated


def requeue(store: Store, step_id: int, *, actor: str, now: datetime) -> DunningStep:
    """Schedule a failed, skipped or needs-review step again; the next run sends it."""
    before = _existing_step(store, step_id)
    facts = store.invoice_facts(before.invoice_id)
    if facts is not None and facts.settled:
        _audit(store, actor, "requeue", step_target(step_id), "refused", now, invoice=facts.status)
        raise BadInput(
            f"invoice {before.invoice_id} is {facts.status}; its steps are not sent again",
            code="invalid_state",
        )
    updated = store.requeue_step(step_id, REQUEUE_FROM, now)
    if updated is None:
        _audit(store, actor, "requeue", step_target(step_id), "refused", now, status=before.status)
        raise BadInput(
            f"step {step_id} is {before.status}; only {', '.join(REQUEUE_FROM)} steps "
            "can be requeued",
            code="invalid_state",
        )
    _audit(store, actor, "requeue", step_target(step_id), "scheduled", now, was=before.status)
    return updated
