"""``dunning run``: claim due steps, send each once, record it, escalate exhausted invoices.

Safe with concurrent runs (claims are atomic and exclusive) and after crashes (a step
whose run died in ``sending`` becomes ``needs_review`` once its lease runs out, and is
never resent on its own). Each message is confirmed, by its step's id, immediately before
it is handed to a provider, so a payment or an exemption recorded by then stops it however
slow the messages before it were.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cloudgreet_billing.adapters.notify.protocol import (
    ChatPoster,
    DeliveryError,
    EmailSender,
    OutgoingEmail,
    OutgoingSms,
    SmsSender,
)
from cloudgreet_billing.adapters.store.protocol import AuditDraft, Store
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.domain.dunning import (
    ClaimedStep,
    DunningConfig,
    EscalationCandidate,
    StepOutcome,
    decide,
)
from cloudgreet_billing.domain.money import format_money
from cloudgreet_billing.errors import ConfigError
from cloudgreet_billing.services import Progress
from cloudgreet_billing.services.dunning.messages import (
    MessageBook,
    MessageError,
    RenderedMessage,
    step_context,
)
from cloudgreet_billing.services.dunning.operator import pause_state
from cloudgreet_billing.services.dunning.reach import resolve_reached

#: Steps claimed per transaction; small enough that a pause takes effect quickly.
CLAIM_BATCH = 200
#: Outcomes recorded per transaction; a crash leaves at most this many sent steps unrecorded.
RECORD_BATCH = 50
#: Steps no channel could deliver, listed one by one in the summary; past this, counted.
MAX_LISTED_UNDELIVERABLE = 100

#: The status a step takes for each decision that sends nothing.
OUTCOME_STATUS = {
    "skip": "skipped",
    "exempt": "skipped",
    "undeliverable": "skipped",
    "cancel": "canceled",
    "fail": "failed",
}


@dataclass
class Channels:
    """Where messages go; built by ``bootstrap`` from the settings."""

    email: EmailSender
    sms: SmsSender
    slack: ChatPoster | None = None
    finance_lead_email: str | None = None


@dataclass
class RunSummary:
    """The contract's summary, plus what a human needs to follow up.

    ``needs_review`` is the number of steps waiting for review now, whichever run left them;
    ``leases_expired`` is how many this run moved there. ``undeliverable`` counts the skipped
    steps that no channel could deliver, ``exempt`` those of customers exempt from dunning
    (``dunning exempt``). A dry run counts what it would do, except that
    messages it would send are ``would_send``, never ``sent``.
    """

    due: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    canceled: int = 0
    escalated: int = 0
    paused: bool = False
    dry_run: bool = False
    needs_review: int = 0
    escalation_failures: int = 0
    undeliverable: int = 0
    exempt: int = 0
    leases_expired: int = 0
    would_send: int = 0
    run_id: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    undeliverable_steps: list[dict[str, Any]] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        # Steps waiting in needs_review wait for a person (mark-sent or requeue), and an
        # invoice no channel can reach needs one too: cron must hear about them as it
        # hears about failed sends, in every run until they are dealt with.
        return bool(
            self.failed or self.escalation_failures or self.needs_review or self.undeliverable
        )

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "due": self.due,
            "sent": self.sent,
            "skipped": self.skipped,
            "failed": self.failed,
            "canceled": self.canceled,
            "escalated": self.escalated,
            "paused": self.paused,
            "dry_run": self.dry_run,
            "needs_review": self.needs_review,
            "leases_expired": self.leases_expired,
            "undeliverable": self.undeliverable,
            "exempt": self.exempt,
            "escalation_failures": self.escalation_failures,
            "run_id": self.run_id,
            "errors": self.errors,
            "undeliverable_steps": self.undeliverable_steps,
        }
        if self.dry_run:
            data["would_send"] = self.would_send
            data["planned"] = self.planned
        return data

    def count(self, outcome: StepOutcome) -> None:
        if outcome.status == "sent":
            self.sent += 1
        elif outcome.status == "skipped":
            self.skipped += 1
            self.undeliverable += outcome.undeliverable
            self.exempt += outcome.exempt
        elif outcome.status == "canceled":
            self.canceled += 1
        elif outcome.status == "failed":
            self.failed += 1
            self.errors.append({"step_id": outcome.step_id, "error": outcome.error})

    def note_undeliverable(self, claimed: ClaimedStep, reason: str | None) -> None:
        if len(self.undeliverable_steps) < MAX_LISTED_UNDELIVERABLE:
            self.undeliverable_steps.append(
                {
                    "step_id": claimed.step.id,
                    "invoice_id": claimed.step.invoice_id,
                    "customer_id": claimed.step.customer_id,
                    "reason": reason,
                }
            )


def new_run_id() -> str:
    """Names the claimant in ``claimed_by``: which host and process held a step."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def check_templates(config: DunningConfig, book: MessageBook) -> None:
    """Refuse to start when the configured timeline names a template that cannot load."""
    problems = book.check(step.template for step in config.timeline)
    if problems:
        raise ConfigError(
            f"dunning templates are broken: {'; '.join(problems)}",
            hint="fix the templates (see `dunning preview`), or BILLING_CONFIG's timeline",
        )


class _Sender:
    """One claimed step at a time: decide, render, confirm, deliver; record in batches."""

    def __init__(
        self,
        store: Store,
        channels: Channels,
        book: MessageBook,
        run_id: str,
        clock: Callable[[], datetime],
        summary: RunSummary,
        lease: timedelta,
        actor: str,
    ) -> None:
        self.store = store
        self.lease = lease
        self.channels = channels
        self.book = book
        self.run_id = run_id
        self.clock = clock
        self.summary = summary
        self.actor = actor
        self.portal_url: str | None = None
        self.pending: list[StepOutcome] = []
        #: Claimed steps without an outcome yet, and the one being handed to a backend.
        self.held: set[int] = set()
        self.in_hand: int | None = None

    def hold(self, claimed: list[ClaimedStep]) -> None:
        self.held.update(item.step.id for item in claimed)

    def process(self, claimed: ClaimedStep) -> None:
        step = claimed.step
        decision = decide(claimed)
        if decision.action != "send":
            if decision.action == "undeliverable":
                self.summary.note_undeliverable(claimed, decision.reason)
            self._finish(_outcome(step.id, decision.action, decision.reason))
            return
        try:
            context = step_context(
                step, claimed.invoice, now=self.clock(), portal_url=self.portal_url
            )
            message = self.book.render(step.template, step.channel, context)
        except MessageError as exc:
            self._finish(StepOutcome(step.id, "failed", error=str(exc)))
            return
        self.deliver(claimed, message)

    def deliver(self, claimed: ClaimedStep, message: RenderedMessage) -> None:
        """Confirm the claim, then hand the message over if it is still confirmed."""
        step_id = claimed.step.id
        now = self.clock()
        # The last look, immediately before this message leaves, however long the ones
        # before it took: one UPDATE by primary key. A payment recorded by now has canceled
        # the step, and then nothing is sent for it.
        if not self.store.confirm_sends([step_id], self.run_id, now, now + self.lease):
            exemption = self.store.get_exemption(claimed.step.customer_id)
            if exemption is not None:
                # Exempted since the claim: skipped, like the customer's other due steps.
                self._finish(_outcome(step_id, "exempt", exemption.skip_reason))
                return
            self._finish(
                # Not held any more: the invoice was settled, or the claim was lost.
                StepOutcome(step_id, "canceled", reason="claim withdrawn before the send")
            )
            return
        self.in_hand = step_id
        try:
            provider_id = self._send(claimed, message)
        except DeliveryError as exc:
            self._finish(StepOutcome(step_id, "failed", error=str(exc)))
        else:
            self._finish(StepOutcome(step_id, "sent", provider_message_id=provider_id))

    def _send(self, claimed: ClaimedStep, message: RenderedMessage) -> str | None:
        step = claimed.step
        contact = claimed.invoice.contact(step.channel)
        assert contact is not None, "decide() skips steps without a contact"
        if step.channel == "email":
            return self.channels.email.send(
                OutgoingEmail(
                    to=contact, subject=message.subject or "", body=message.body, step_id=step.id
                )
            )
        return self.channels.sms.send(OutgoingSms(to=contact, body=message.body, step_id=step.id))

    def _finish(self, outcome: StepOutcome) -> None:
        self.summary.count(outcome)
        self.pending.append(outcome)
        self.held.discard(outcome.step_id)
        if self.in_hand == outcome.step_id:
            self.in_hand = None
        if len(self.pending) >= RECORD_BATCH:
            self.record()

    def record(self) -> None:
        """Record every outcome so far, in one transaction."""
        if self.pending:
            self.store.record_step_outcomes(
                self.pending, self.run_id, self.clock(), actor=self.actor
            )
            self.pending = []

    def abandon(self) -> None:
        """On an error or interrupt: record what happened, and give back the steps never
        handed to a backend. The one in a backend's hands may have gone out, so it stays
        ``sending`` and reaches ``needs_review`` after its lease."""
        self.record()
        unsent = sorted(self.held - {self.in_hand})
        self.store.release_claims(unsent, self.run_id, self.clock())


def _outcome(step_id: int, action: str, reason: str | None) -> StepOutcome:
    """The outcome of a decision that sends nothing."""
    status = OUTCOME_STATUS[action]
    return StepOutcome(
        step_id,
        status,
        reason=None if status == "failed" else reason,
        error=reason if status == "failed" else None,
        undeliverable=action == "undeliverable",
        exempt=action == "exempt",
    )


def run_dunning(
    store: Store,
    channels: Channels | None,
    config: DunningConfig,
    book: MessageBook,
    *,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    batch_size: int = CLAIM_BATCH,
) -> RunSummary:
    """Send every due step once. ``channels`` may be None only for a dry run.

    Returns the summary; ``summary.paused`` means nothing was (or no more was) sent
    because dunning is paused.
    """
    summary = RunSummary(dry_run=dry_run, run_id=new_run_id())
    if pause_state(store).paused:
        summary.paused = True
        summary.needs_review = store.count_needs_review()
        _audit_run(store, actor, summary, clock())
        return summary
    check_templates(config, book)
    if dry_run:
        _plan(store, config, book, summary, clock(), limit)
        summary.needs_review = store.count_needs_review()
        return summary
    assert channels is not None, "a real run needs delivery channels"
    summary.leases_expired = store.expire_leases(clock())
    # Contacts found since the last run (a sync, a fixed customer) close their alerts.
    resolve_reached(store, actor=actor, now=clock())
    sender = _Sender(store, channels, book, summary.run_id, clock, summary, config.lease, actor)
    sender.portal_url = config.portal_url
    remaining = limit
    while remaining is None or remaining > 0:
        if pause_state(store).paused:
            summary.paused = True
            break
        now = clock()
        take = batch_size if remaining is None else min(batch_size, remaining)
        claimed = store.claim_due_steps(
            now=now, lease_until=now + config.lease, run_id=summary.run_id, limit=take
        )
        if not claimed:
            break
        sender.hold(claimed)
        summary.due += len(claimed)
        if remaining is not None:
            remaining -= len(claimed)
        try:
            for item in claimed:
                sender.process(item)
                if progress is not None:
                    progress(1)
            sender.record()
        except BaseException:
            # The original error is what matters; a store that is down may fail here too.
            with contextlib.suppress(Exception):
                sender.abandon()
            raise
    if not summary.paused:
        _escalate(store, channels, config, book, summary, actor, clock)
    # Counted now, from the store: every step waiting, not just the ones this run expired.
    summary.needs_review = store.count_needs_review()
    _audit_run(store, actor, summary, clock())
    return summary


def _plan(
    store: Store,
    config: DunningConfig,
    book: MessageBook,
    summary: RunSummary,
    now: datetime,
    limit: int | None,
) -> None:
    """What a run would do now, changing nothing: every message it would send, rendered
    as the run would render it, to the contact it would use."""
    for claimed in store.due_steps(now, limit):
        step = claimed.step
        decision = decide(claimed)
        action, reason = decision.action, decision.reason
        summary.due += 1
        if action == "send":
            try:
                context = step_context(step, claimed.invoice, now=now, portal_url=config.portal_url)
                book.render(step.template, step.channel, context)
            except MessageError as exc:
                action, reason = "fail", str(exc)
        recipient = claimed.invoice.contact(step.channel) if action == "send" else None
        if action == "send":
            summary.would_send += 1
        else:
            if action == "undeliverable":
                summary.note_undeliverable(claimed, reason)
            summary.count(_outcome(step.id, action, reason))
        summary.planned.append(
            {
                "step_id": step.id,
                "invoice_id": step.invoice_id,
                "customer_id": step.customer_id,
                "day": step.day,
                "channel": step.channel,
                "template": step.template,
                "action": action,
                "recipient": recipient,
                "reason": reason,
            }
        )
    summary.escalated = len(store.escalation_candidates(config.escalate_after))


def _escalate(
    store: Store,
    channels: Channels,
    config: DunningConfig,
    book: MessageBook,
    summary: RunSummary,
    actor: str,
    clock: Callable[[], datetime],
) -> None:
    """Open one ``dunning_exhausted`` alert per exhausted invoice and tell the team."""
    for candidate in store.escalation_candidates(config.escalate_after):
        now = clock()
        details: dict[str, Any] = {"completed": candidate.completed, "run_id": summary.run_id}
        alert_id = store.open_exhaustion_alert(candidate, details, now)
        if alert_id is None:
            continue  # another run opened it first
        summary.escalated += 1
        notices = _notify_escalation(channels, book, candidate, alert_id)
        failures = [name for name, outcome in notices.items() if outcome.startswith("failed")]
        for name in failures:
            summary.escalation_failures += 1
            summary.errors.append(
                {"invoice_id": candidate.invoice_id, "alert_id": alert_id, "error": notices[name]}
            )
        store.update_alert_details(alert_id, {**details, "notified": notices}, clock())
        store.append_audit(
            AuditDraft(
                actor=actor,
                action="dunning.escalate",
                target=candidate.invoice_id,
                outcome="failed" if failures else "escalated",
                details={"alert_id": alert_id, "completed": candidate.completed, **notices},
            ),
            clock(),
        )


def _notify_escalation(
    channels: Channels, book: MessageBook, candidate: EscalationCandidate, alert_id: int
) -> dict[str, str]:
    context: dict[str, Any] = {
        "invoice_id": candidate.invoice_id,
        "customer_id": candidate.customer_id,
        "completed": candidate.completed,
        "alert_id": alert_id,
        "amount_due": (
            format_money(candidate.amount_due, candidate.currency)
            if candidate.amount_due is not None and candidate.currency
            else "an unknown amount (invoice not mirrored)"
        ),
    }
    notices: dict[str, str] = {}
    if channels.finance_lead_email:
        try:
            message = book.render("escalation_email", "email", context)
            channels.email.send(
                OutgoingEmail(
                    to=channels.finance_lead_email,
                    subject=message.subject or "",
                    body=message.body,
                )
            )
            notices["finance_lead_email"] = "sent"
        except (MessageError, DeliveryError) as exc:
            notices["finance_lead_email"] = f"failed: {exc}"
    else:
        notices["finance_lead_email"] = "not configured"
    if channels.slack is not None:
        try:
            channels.slack.post(book.render("escalation_slack", "sms", context).body)
            notices["slack"] = "sent"
        except (MessageError, DeliveryError) as exc:
            notices["slack"] = f"failed: {exc}"
    else:
        notices["slack"] = "not configured"
    return notices


def _audit_run(store: Store, actor: str, summary: RunSummary, now: datetime) -> None:
    if summary.dry_run and not summary.paused:
        return
    outcome = "paused" if summary.paused else "failed" if summary.needs_attention else "completed"
    details = {key: value for key, value in summary.as_json().items() if key != "errors"}
    details["errors"] = summary.errors[:20]
    store.append_audit(
        AuditDraft(
            actor=actor, action="dunning.run", target="dunning", outcome=outcome, details=details
        ),
        now,
    )
