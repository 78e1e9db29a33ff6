"""Operator commands: list, preview, mark-sent (and its undo), requeue, pause, resume.

Each is audited. Those that change what reaches a customer are confirmed first
(``Safety``: a prompt on a terminal, ``--yes`` elsewhere), like the payment actions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from cloudgreet_billing.adapters.store.protocol import AuditDraft, AuditRecord, Store
from cloudgreet_billing.domain.dunning import (
    PAUSE_SETTING,
    DunningConfig,
    DunningStep,
    InvoiceFacts,
    PauseState,
)
from cloudgreet_billing.domain.exemptions import Exemption
from cloudgreet_billing.domain.inputs import parse_target, shown
from cloudgreet_billing.domain.statuses import (
    MARK_SENT_FROM,
    OPEN_STATUSES,
    REQUEUE_FROM,
    STEP_STATUSES,
)
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.errors import BadInput, NotFound, Refused
from cloudgreet_billing.services.actions.common import (
    AuditStory,
    ConfirmRequest,
    Safety,
    ask,
    customer_label,
    refuse_unconfirmed,
)
from cloudgreet_billing.services.dunning.messages import MessageBook, MessageError, step_context

#: What a refusal for want of confirmation suggests.
YES_HINT = "re-run with --yes, or on a terminal to be asked"
NOTHING_CHANGED = "nothing was changed"
#: Audit lines of one step read to find the mark-sent an unmark undoes.
AUDIT_LOOKBACK = 10_000


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


@dataclass(frozen=True, slots=True)
class PauseOutcome:
    """What ``pause`` did: ``state`` is the pause in force afterwards; ``already`` says it
    was in force before (its reason, actor and time are kept, ``added`` joined them)."""

    state: PauseState
    already: bool
    added: Mapping[str, str] | None = None


def pause(
    store: Store, *, reason: str, actor: str, now: datetime, safety: Safety | None = None
) -> PauseOutcome:
    """Stop every run from sending until ``resume``; records who and why.

    A pause while paused keeps the first one's reason, actor and time: nobody loses
    the incident's "INC-42". It needs confirmation (``safety``; exit 3 without), and then
    adds the new reason beside the first.
    """
    if not reason.strip():
        raise BadInput(
            "--reason must say why dunning is paused", hint="e.g. --reason 'Stripe outage'"
        )
    text = reason.strip()
    current = pause_state(store)
    if current.paused:
        return _pause_again(store, current, text, actor, now, safety or Safety())
    state = PauseState(paused=True, reason=text, actor=actor, at=iso_z(now))
    store.put_setting(
        PAUSE_SETTING,
        {"paused": True, "reason": state.reason, "actor": actor, "at": state.at},
        actor,
        now,
    )
    _audit(store, actor, "pause", "dunning", "paused", now, reason=state.reason)
    return PauseOutcome(state=state, already=False)


def _pause_again(
    store: Store, current: PauseState, reason: str, actor: str, now: datetime, safety: Safety
) -> PauseOutcome:
    story = AuditStory.of(
        store,
        actor,
        "dunning.pause",
        "dunning",
        safety,
        {"reason": reason, "paused_by": current.actor, "paused_since": current.at},
    )
    already = f"dunning is already paused, by {current.actor} at {current.at}: {current.reason}"
    refuse_unconfirmed(
        story,
        safety,
        already,
        hint="that pause stays as it is; --yes adds your reason beside it",
    )
    ask(
        story,
        safety,
        _request(
            "pause",
            f"{already}. Keep it, and add your reason ({reason})?",
        ),
        nothing="the pause is unchanged",
    )
    added = {"reason": reason, "actor": actor, "at": iso_z(now) or ""}
    setting = store.get_setting(PAUSE_SETTING)
    value = dict(setting) if isinstance(setting, dict) else {}
    value["also"] = [*value.get("also", []), added]
    store.put_setting(PAUSE_SETTING, value, actor, now)
    story.record("already_paused", added=reason)
    return PauseOutcome(state=PauseState.from_setting(value), already=True, added=added)


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


@dataclass(frozen=True)
class StepListing:
    """The steps ``dunning list`` shows, how many matched before ``--limit``, and the
    exemptions in force of their customers, by customer."""

    steps: list[DunningStep]
    total: int
    exemptions: Mapping[str, Exemption] = field(default_factory=dict)


def list_steps(
    store: Store,
    *,
    status: str | None,
    invoice_id: str | None,
    limit: int,
    actor: str,
    now: datetime,
    customer_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StepListing:
    """Steps by due time (``since``/``until`` bound the due time). Default: every status for
    one invoice, else the unfinished ones."""
    statuses: Sequence[str] | None
    if status is None:
        statuses = None if invoice_id else OPEN_STATUSES
    elif status == "all":
        statuses = None
    elif status in STEP_STATUSES:
        statuses = (status,)
    else:
        raise BadInput(
            f"--status {shown(status)} is not a step status",
            hint=f"use one of {', '.join(STEP_STATUSES)}, or all",
        )
    if invoice_id is not None and not invoice_id.startswith("in_"):
        raise BadInput(f"--invoice {shown(invoice_id)} is not an invoice id", hint="use in_…")
    filters: dict[str, Any] = {
        "statuses": statuses,
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "since": since,
        "until": until,
    }
    steps = store.list_steps(**filters, limit=limit)
    total = store.count_steps(**filters) if len(steps) >= limit else len(steps)
    exempt = store.list_exemptions(customer_ids=sorted({step.customer_id for step in steps}))
    _audit(
        store,
        actor,
        "list",
        invoice_id or customer_id or "dunning",
        "listed",
        now,
        status=status,
        count=len(steps),
    )
    return StepListing(steps, total, {exemption.customer_id: exemption for exemption in exempt})


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
            context = step_context(step, facts, now=now, portal_url=config.portal_url)
            rendered = book.render(step.template, step.channel, context)
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


def _request(
    action: str, question: str, step: DunningStep | None = None, store: Store | None = None
) -> ConfirmRequest:
    """What the operator confirms; for a step, its customer, invoice and amount owed."""
    if step is None or store is None:
        return ConfirmRequest(
            action=action,
            question=question,
            mode="",
            customer_id=None,
            customer_label=None,
            invoice_id=None,
            amount=None,
            currency=None,
        )
    invoice = store.get_invoice(step.invoice_id)
    return ConfirmRequest(
        action=action,
        question=question,
        mode="",
        customer_id=step.customer_id,
        customer_label=customer_label(store, step.customer_id, invoice),
        invoice_id=step.invoice_id,
        amount=invoice.amount_owed if invoice else None,
        currency=invoice.currency if invoice else None,
    )


def _step_name(step: DunningStep) -> str:
    return f"step {step.id} (day {step.day} {step.channel} for {step.invoice_id})"


def mark_sent(
    store: Store,
    step_id: int,
    *,
    actor: str,
    now: datetime,
    safety: Safety | None = None,
    force: bool = False,
    reason: str | None = None,
) -> DunningStep:
    """Record that a step's message did go out (checked by hand, e.g. after a crash).

    Its message is then never sent, so it is confirmed (``safety``), and a step not yet
    due needs ``force``: marking one sent is more often a wrong step id than a message
    sent early. ``unmark_sent`` undoes it.
    """
    safety = safety or Safety()
    note = (reason or "").strip() or None
    before = _existing_step(store, step_id)
    target = step_target(step_id)
    if before.status not in MARK_SENT_FROM:
        _refuse_mark(store, actor, now, before)
    if before.due_at > now and not force:
        _audit(
            store,
            actor,
            "mark_sent",
            target,
            "refused",
            now,
            status=before.status,
            due_at=iso_z(before.due_at),
        )
        raise Refused(
            f"{_step_name(before)} is not due until {iso_z(before.due_at)}; marking it sent "
            "means its message is never sent",
            hint="check the step id (dunning list); --force marks it sent anyway",
        )
    story = AuditStory.of(store, actor, "dunning.mark_sent", target, safety, {})
    refuse_unconfirmed(story, safety, f"marking {_step_name(before)} sent", hint=YES_HINT)
    ask(
        story,
        safety,
        _request(
            "mark-sent",
            f"Mark {_step_name(before)} sent? Its message will not be sent.",
            before,
            store,
        ),
        nothing=NOTHING_CHANGED,
    )
    marked = f"marked sent by {actor}" + (f": {note}" if note else "")
    updated = store.mark_step_sent(step_id, MARK_SENT_FROM, marked, now)
    if updated is None:
        _refuse_mark(store, actor, now, _existing_step(store, step_id))
    assert updated is not None
    _audit(
        store,
        actor,
        "mark_sent",
        target,
        "sent",
        now,
        was=before.status,
        was_reason=before.reason,
        marked_reason=marked,
        reason=note,
        forced=force and before.due_at > now,
    )
    return updated


def _refuse_mark(store: Store, actor: str, now: datetime, step: DunningStep) -> NoReturn:
    _audit(store, actor, "mark_sent", step_target(step.id), "refused", now, status=step.status)
    raise BadInput(
        f"step {step.id} is {step.status}; only {', '.join(MARK_SENT_FROM)} steps "
        "can be marked sent",
        code="invalid_state",
    )


def unmark_sent(
    store: Store,
    step_id: int,
    *,
    actor: str,
    now: datetime,
    safety: Safety | None = None,
    reason: str | None = None,
) -> tuple[DunningStep, AuditRecord]:
    """Undo a manual ``mark_sent``: the step goes back to the status (and note) it had,
    with no ``sent_at``. Only a step still sent by that mark can be; one a run sent is
    not. Confirmed like the mark; returns the step and the mark's audit line."""
    safety = safety or Safety()
    note = (reason or "").strip() or None
    before = _existing_step(store, step_id)
    target = step_target(step_id)
    mark = _last_manual_mark(store, target)
    if before.status != "sent" or mark is None:
        _audit(store, actor, "unmark_sent", target, "refused", now, status=before.status)
        how = "was not marked sent by hand" if before.status == "sent" else f"is {before.status}"
        raise BadInput(
            f"step {step_id} {how}; only a step marked sent with `dunning mark-sent` "
            "can be unmarked",
            code="invalid_state",
        )
    was = str(mark.details.get("was") or "needs_review")
    story = AuditStory.of(store, actor, "dunning.unmark_sent", target, safety, {})
    refuse_unconfirmed(story, safety, f"unmarking {_step_name(before)}", hint=YES_HINT)
    then = " The next dunning run sends it." if was == "scheduled" else ""
    ask(
        story,
        safety,
        _request(
            "unmark-sent",
            f"Undo the mark-sent of {_step_name(before)} by {mark.actor}? It goes back to "
            f"{was}.{then}",
            before,
            store,
        ),
        nothing=NOTHING_CHANGED,
    )
    marked_reason = mark.details.get("marked_reason") or f"marked sent by {mark.actor}"
    updated = store.unmark_step_sent(
        step_id,
        marked_reason=str(marked_reason),
        status=was,
        reason=mark.details.get("was_reason"),
        now=now,
    )
    if updated is None:
        current = _existing_step(store, step_id)
        _audit(store, actor, "unmark_sent", target, "refused", now, status=current.status)
        raise BadInput(
            f"step {step_id} changed meanwhile (now {current.status}); nothing was undone",
            code="invalid_state",
        )
    _audit(
        store,
        actor,
        "unmark_sent",
        target,
        "restored",
        now,
        status=was,
        reason=note,
        marked_by=mark.actor,
        marked_at=iso_z(mark.occurred_at),
    )
    return updated, mark


def _last_manual_mark(store: Store, target: str) -> AuditRecord | None:
    """The mark-sent the step's status still stands on: the last mark or unmark in its
    audit trail, if that is a mark."""
    last = None
    for record in store.audit_trail(target, limit=AUDIT_LOOKBACK):
        if (record.action, record.outcome) in (
            ("dunning.mark_sent", "sent"),
            ("dunning.unmark_sent", "restored"),
        ):
            last = record
    if last is None or last.action != "dunning.mark_sent":
        return None
    return last


def requeue(
    store: Store, step_id: int, *, actor: str, now: datetime, safety: Safety | None = None
) -> DunningStep:
    """Schedule a failed, skipped or needs-review step again; the next run sends it.
    It will reach the customer, so it is confirmed (``safety``)."""
    safety = safety or Safety()
    before = _existing_step(store, step_id)
    facts = store.invoice_facts(before.invoice_id)
    if facts is not None and facts.settled:
        _audit(store, actor, "requeue", step_target(step_id), "refused", now, invoice=facts.status)
        raise BadInput(
            f"invoice {before.invoice_id} is {facts.status}; its steps are not sent again",
            code="invalid_state",
        )
    if before.status not in REQUEUE_FROM:
        _refuse_requeue(store, actor, now, before)
    story = AuditStory.of(store, actor, "dunning.requeue", step_target(step_id), safety, {})
    refuse_unconfirmed(story, safety, f"requeueing {_step_name(before)}", hint=YES_HINT)
    twice = (
        " The provider may already have it: the customer could get it twice."
        if before.may_have_been_sent
        else ""
    )
    ask(
        story,
        safety,
        _request(
            "requeue",
            f"Requeue {_step_name(before)}? The next dunning run sends it.{twice}",
            before,
            store,
        ),
        nothing=NOTHING_CHANGED,
    )
    updated = store.requeue_step(step_id, REQUEUE_FROM, now)
    if updated is None:
        _refuse_requeue(store, actor, now, _existing_step(store, step_id))
    assert updated is not None
    _audit(store, actor, "requeue", step_target(step_id), "scheduled", now, was=before.status)
    return updated


def _refuse_requeue(store: Store, actor: str, now: datetime, step: DunningStep) -> NoReturn:
    _audit(store, actor, "requeue", step_target(step.id), "refused", now, status=step.status)
    raise BadInput(
        f"step {step.id} is {step.status}; only {', '.join(REQUEUE_FROM)} steps can be requeued",
        code="invalid_state",
    )
