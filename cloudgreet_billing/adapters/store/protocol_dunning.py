"""Store operations: dunning steps (``billing_dunning_events``): schedule, claim, record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.domain.dunning import (
        ClaimedStep,
        DunningStep,
        EscalationCandidate,
        InvoiceFacts,
        InvoiceReach,
        StepDraft,
        StepOutcome,
    )


class DunningOps(Protocol):
    """Part of ``Store``; see ``protocol.py``.

    A run's protocol, safe with any number of concurrent runs: ``claim_due_steps`` moves due
    steps to ``sending`` under the run's id and a lease; ``confirm_sends`` re-checks a claim
    immediately before its message is handed over (a payment recorded by then has canceled
    the step, or an exemption committed by then stands, and the confirmation fails);
    ``record_step_outcomes`` records what happened, only for steps the run still holds.
    Steps whose lease runs out become ``needs_review`` (``expire_leases``), saying whether
    they had been confirmed.
    """

    def schedule_steps(self, steps: Sequence[StepDraft], now: datetime) -> int:
        """Schedule steps (one per invoice, day and channel); returns how many were new."""
        ...

    def cancel_pending_steps(self, invoice_id: str, reason: str, now: datetime) -> int:
        """Cancel every step of the invoice not yet sent; returns how many."""
        ...

    def expire_leases(self, now: datetime) -> int:
        """Move steps left in ``sending`` past their lease to ``needs_review``; returns how
        many this call moved."""
        ...

    def count_needs_review(self) -> int:
        """Steps waiting for review now (``mark-sent`` or ``requeue``), whoever expired them."""
        ...

    def count_due_steps(self, now: datetime) -> int:
        """Scheduled steps due at ``now``."""
        ...

    def due_steps(self, now: datetime, limit: int | None) -> list[ClaimedStep]:
        """The steps a run would claim now, claiming nothing (for ``--dry-run``)."""
        ...

    def claim_due_steps(
        self, *, now: datetime, lease_until: datetime, run_id: str, limit: int
    ) -> list[ClaimedStep]:
        """Atomically move up to ``limit`` due steps to ``sending`` for ``run_id``; concurrent
        claimers never receive the same step. Each comes with its customer's exemption,
        read in the same transaction."""
        ...

    def confirm_sends(
        self,
        step_ids: Sequence[int],
        run_id: str,
        now: datetime,
        lease_until: datetime | None = None,
    ) -> set[int]:
        """Count an attempt for each step the run still holds whose invoice is unsettled
        and whose customer is not exempt, noting it confirmed (``confirmed_at``) and
        renewing its lease to ``lease_until``; returns those ids. Only they may be sent. A
        run confirms one step, by its id, immediately before handing its message over."""
        ...

    def record_step_outcomes(
        self,
        outcomes: Sequence[StepOutcome],
        run_id: str,
        now: datetime,
        *,
        actor: str = "dunning run",
    ) -> int:
        """Record outcomes of steps the run holds; returns how many were recorded. A ``sent``
        outcome is recorded even if the step was canceled or expired meanwhile: it went out.
        An ``undeliverable`` skip opens its unpaid invoice's ``dunning_undeliverable`` alert
        (one unresolved per invoice, audited as ``actor``) in the same transaction."""
        ...

    def release_claims(self, step_ids: Sequence[int], run_id: str, now: datetime) -> int:
        """Give claimed, unsent steps back (``scheduled``), e.g. when dunning is paused."""
        ...

    def list_steps(
        self,
        *,
        statuses: Sequence[str] | None = None,
        invoice_id: str | None = None,
        alert_id: int | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 50,
    ) -> list[DunningStep]:
        """Steps by due time; ``statuses=None`` means every status. ``since`` and ``until``
        bound ``due_at`` (``until`` exclusive)."""
        ...

    def count_steps(
        self,
        *,
        statuses: Sequence[str] | None = None,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many steps ``list_steps`` would list with these filters and no ``limit``."""
        ...

    def get_step(self, step_id: int) -> DunningStep | None: ...

    def mark_step_sent(
        self, step_id: int, from_statuses: Sequence[str], reason: str, now: datetime
    ) -> DunningStep | None:
        """Mark a step sent by hand if it is in one of ``from_statuses``; else None."""
        ...

    def requeue_step(
        self, step_id: int, from_statuses: Sequence[str], now: datetime
    ) -> DunningStep | None:
        """Schedule a step again if it is in one of ``from_statuses``; else None."""
        ...

    def unmark_step_sent(
        self, step_id: int, *, marked_reason: str, status: str, reason: str | None, now: datetime
    ) -> DunningStep | None:
        """Undo a manual mark-sent: if the step is still ``sent`` with the reason the mark
        gave it (``marked_reason``), put it back in ``status`` with ``reason`` and no
        ``sent_at``; else None."""
        ...

    def invoice_facts(self, invoice_id: str) -> InvoiceFacts | None:
        """The mirrored invoice and the contact dunning uses (``freshest_contact``)."""
        ...

    def dunning_reach(self, invoice_ids: Sequence[str] | None = None) -> list[InvoiceReach]:
        """Unsettled mirrored invoices that have dunning steps (all, or those of
        ``invoice_ids``), each with its contact and its steps' channels; by invoice id."""
        ...

    def escalation_candidates(self, threshold: int) -> list[EscalationCandidate]:
        """Unsettled invoices with ``threshold`` or more sent/skipped steps and no
        ``dunning_exhausted`` alert yet (in any status), of customers not exempt now."""
        ...

    def open_exhaustion_alert(
        self, candidate: EscalationCandidate, details: Mapping[str, Any], now: datetime
    ) -> int | None:
        """Open the invoice's ``dunning_exhausted`` alert; None if one already exists."""
        ...

    def update_alert_details(
        self, alert_id: int, details: Mapping[str, Any], now: datetime
    ) -> None:
        """Replace an escalation alert's details (who was notified, and how it went)."""
        ...
