"""``dunning run``: claim due steps, send each once, record it, escalate exhausted invoices.

Safe with concurrent runs (claims are atomic and exclusive) and after crashes (a step
whose run died in ``sending`` becomes ``needs_review`` once its lease runs out, and is
never resent on its own).
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

#: Steps claimed per transaction; small enough that a pause takes effect quickly.
CLAIM_BATCH = 200
#: Claims confirmed per statement just before sending. The group's messages then go out
#: one after another, so its last message could leave long after the confirmation with a
#: slow provider; ``CONFIRMATION_FRESH_FOR`` bounds that by time. With fast backends (file,
#: console, a local SMTP relay) a whole group takes a few milliseconds: one confirmation.
CONFIRM_GROUP = 10
#: How long a confirmation stays good. A send starting later than this after the last look
#: first confirms again, in one statement, every claim still waiting in its group
#: (``reconfirm_sends``): a payment recorded more than this long before a message is handed
#: over stops it, however slow the provider. A quarter second is well under the time the
#: payment itself takes to reach the store (a Stripe webhook or a sync: seconds at best), and
#: costs at most one UPDATE by primary key, one database round trip, per 0.25 s spent
#: sending; with SMTP or Twilio (100-300 ms a message) that is one look every one to three
#: messages.
CONFIRMATION_FRESH_FOR = timedelta(milliseconds=250)
#: Outcomes recorded per transaction; a crash leaves at most this many sent steps unrecorded.
RECORD_BATCH = 50

#: The status a dry run reports for each decision.
PLANNED_STATUS = {"send": "sent", "skip": "skipped", "cancel": "canceled", "fail": "failed"}


@dataclass
class Channels:
    """Where messages go; built by ``bootstrap`` from the settings."""

    email: EmailSender
    sms: SmsSender
    slack: ChatPoster | None = None
    finance_lead_email: str | None = None


@dataclass
class RunSummary:
    """The contract's summary, plus what a human needs to follow up."""

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
    run_id: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        # Steps moved to needs_review after a crash wait for a person (mark-sent or
        # requeue), so cron must hear about them as it hears about failed sends.
        return bool(self.failed or self.escalation_failures or self.needs_review)

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
            "escalation_failures": self.escalation_failures,
            "run_id": self.run_id,
            "errors": self.errors,
        }
        if self.dry_run:
            data["planned"] = self.planned
        return data

    def count(self, outcome: StepOutcome) -> None:
        if outcome.status == "sent":
            self.sent += 1
        elif outcome.status == "skipped":
            self.skipped += 1
        elif outcome.status == "canceled":
            self.canceled += 1
        elif outcome.status == "failed":
            self.failed += 1
            self.errors.append({"step_id": outcome.step_id, "error": outcome.error})


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
    """One claimed batch at a time: decide, render, confirm, deliver, record."""

    def __init__(
        self,
        store: Store,
        channels: Channels,
        book: MessageBook,
        run_id: str,
        clock: Callable[[], datetime],
        summary: RunSummary,
        lease: timedelta,
    ) -> None:
        self.store = store
        self.lease = lease
        self.channels = channels
        self.book = book
        self.run_id = run_id
        self.clock = clock
        self.summary = summary
        self.ready: list[tuple[ClaimedStep, RenderedMessage]] = []
        self.pending: list[StepOutcome] = []
        #: Claimed steps without an outcome yet, and the one being handed to a backend.
        self.held: set[int] = set()
        self.in_hand: int | None = None

    def hold(self, claimed: list[ClaimedStep]) -> None:
        self.held.update(item.step.id for item in claimed)

    def process(self, claimed: ClaimedStep) -> None:
        step = claimed.step
        decision = decide(claimed)
        if decision.action == "cancel":
            self._finish(StepOutcome(step.id, "canceled", reason=decision.reason))
        elif decision.action == "skip":
            self._finish(StepOutcome(step.id, "skipped", reason=decision.reason))
        elif decision.action == "fail":
            self._finish(StepOutcome(step.id, "failed", error=decision.reason))
        else:
            try:
                context = step_context(step, claimed.invoice)
                message = self.book.render(step.template, step.channel, context)
            except MessageError as exc:
                self._finish(StepOutcome(step.id, "failed", error=str(exc)))
                return
            self.ready.append((claimed, message))
            if len(self.ready) >= CONFIRM_GROUP:
                self.deliver()

    def deliver(self) -> None:
        """Confirm the rendered messages' claims, then send those still confirmed."""
        if not self.ready:
            return
        ready, self.ready = self.ready, []
        # The last look before messages leave: a payment recorded since the claim has
        # canceled its step, and then nothing is sent for it.
        confirmed_at = self.clock()
        confirmed = self.store.confirm_sends(
            [claimed.step.id for claimed, _ in ready],
            self.run_id,
            confirmed_at,
            confirmed_at + self.lease,
        )
        for position, (claimed, message) in enumerate(ready):
            step_id = claimed.step.id
            now = self.clock()
            if step_id in confirmed and now - confirmed_at > CONFIRMATION_FRESH_FOR:
                # Slow sends before this one made the look stale: look again, once, for
                # every message still waiting.
                waiting = [
                    item.step.id for item, _ in ready[position:] if item.step.id in confirmed
                ]
                confirmed = self.store.reconfirm_sends(waiting, self.run_id, now, now + self.lease)
                confirmed_at = now
            if step_id not in confirmed:
                self._finish(
                    # Not held any more: the invoice was settled, or the claim was lost.
                    StepOutcome(step_id, "canceled", reason="claim withdrawn before the send")
                )
                continue
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
            self.flush()

    def flush(self) -> None:
        """Deliver what is rendered, then record every outcome so far."""
        self.deliver()
        self.record()

    def record(self) -> None:
        if self.pending:
            self.store.record_step_outcomes(self.pending, self.run_id, self.clock())
            self.pending = []

    def abandon(self) -> None:
        """On an error or interrupt: record what happened, and give back the steps never
        handed to a backend. The one in a backend's hands may have gone out, so it stays
        ``sending`` and reaches ``needs_review`` after its lease."""
        self.record()
        unsent = sorted(self.held - {self.in_hand})
        self.store.release_claims(unsent, self.run_id, self.clock())


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
        _audit_run(store, actor, summary, clock())
        return summary
    check_templates(config, book)
    if dry_run:
        return _plan(store, config, summary, clock(), limit)
    assert channels is not None, "a real run needs delivery channels"
    summary.needs_review = store.expire_leases(clock())
    sender = _Sender(store, channels, book, summary.run_id, clock, summary, config.lease)
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
            sender.flush()
        except BaseException:
            # The original error is what matters; a store that is down may fail here too.
            with contextlib.suppress(Exception):
                sender.abandon()
            raise
    if not summary.paused:
        _escalate(store, channels, config, book, summary, actor, clock)
    _audit_run(store, actor, summary, clock())
    return summary


def _plan(
    store: Store, config: DunningConfig, summary: RunSummary, now: datetime, limit: int | None
) -> RunSummary:
    """What a run would do now, changing nothing."""
    for claimed in store.due_steps(now, limit):
        decision = decide(claimed)
        summary.due += 1
        outcome = StepOutcome(
            claimed.step.id,
            PLANNED_STATUS[decision.action],
            reason=decision.reason,
            error=decision.reason if decision.action == "fail" else None,
        )
        summary.count(outcome)
        summary.planned.append(
            {
                "step_id": claimed.step.id,
                "invoice_id": claimed.step.invoice_id,
                "day": claimed.step.day,
                "channel": claimed.step.channel,
                "action": decision.action,
                "reason": decision.reason,
            }
        )
    summary.escalated = len(store.escalation_candidates(config.escalate_after))
    return summary


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
