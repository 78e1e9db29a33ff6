"""Dunning steps in ``billing_dunning_events``: schedule, claim, record, cancel, escalate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.sql_base import Cursor, chunked
from cloudgreet_billing.adapters.store.sql_exemptions import ExemptionsSql
from cloudgreet_billing.domain.statuses import (
    COMPLETED_STATUSES,
    PENDING_STATUSES,
    SETTLED_INVOICE_STATUSES,
)

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
    from cloudgreet_billing.domain.exemptions import Exemption

    #: Per invoice: the last due day, and the channels its steps use.
    _Timelines = tuple[dict[str, int], dict[str, frozenset[str]]]

ID_BATCH = 500


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


_SETTLED = f"({_marks(SETTLED_INVOICE_STATUSES)})"
STEP_COLUMNS = (
    "d.id, d.invoice_id, d.customer_id, d.alert_id, d.day, d.channel, d.template, d.status, "
    "d.due_at, d.sent_at, d.attempts, d.last_error, d.reason, d.provider_message_id, "
    "d.claimed_by, d.lease_expires_at, d.confirmed_at"
)
STEP_SELECT = f"SELECT {STEP_COLUMNS} FROM billing_dunning_events d"
#: How many columns ``STEP_COLUMNS`` reads; the facts follow them in a claim's rows.
STEP_WIDTH = STEP_COLUMNS.count(",") + 1
#: What ``_facts`` reads: the invoice, the contact Stripe copied onto it, and the mirrored
#: customer's (``c.id`` is NULL when the customer is not mirrored).
FACT_COLUMNS = (
    "i.status, i.number, i.amount_due, i.amount_remaining, i.currency, i.hosted_invoice_url, "
    "i.first_failed_at, i.customer_email, i.customer_phone, i.customer_name, i.finalized_at, "
    "c.id, c.email, c.phone, c.name, c.deleted, c.stripe_updated_at, "
    "i.next_payment_attempt, i.last_decline_code, i.last_advice_code"
)
#: A later step of the same invoice in one of these, and due, makes a step redundant.
SUPERSEDING_STATUSES = frozenset({"scheduled", "sending", "sent"})
CLAIMED_SELECT = (
    f"SELECT {STEP_COLUMNS}, {FACT_COLUMNS} FROM billing_dunning_events d "
    "LEFT JOIN billing_invoices i ON i.id = d.invoice_id "
    "LEFT JOIN billing_customers c ON c.id = d.customer_id"
)
DUE = "d.status = 'scheduled' AND d.due_at <= ?"
INSERT_STEPS = (
    "INSERT INTO billing_dunning_events (invoice_id, customer_id, alert_id, day, "
    "channel, template, status, due_at, created_at, updated_at) VALUES"
)
STEP_VALUES = "(?, ?, ?, ?, ?, ?, 'scheduled', ?, ?, ?)"
INSERT_CANCELED_STEPS = (
    "INSERT INTO billing_dunning_events (invoice_id, customer_id, alert_id, day, "
    "channel, template, status, due_at, created_at, updated_at, reason) VALUES"
)
CANCELED_STEP_VALUES = "(?, ?, ?, ?, ?, ?, 'canceled', ?, ?, ?, ?)"
ON_STEP_CONFLICT = "ON CONFLICT (invoice_id, day, channel) DO NOTHING RETURNING id"
CANCEL_PENDING = (
    "UPDATE billing_dunning_events SET status = 'canceled', reason = ?, "
    "lease_expires_at = NULL, updated_at = ? "
    f"WHERE invoice_id = ? AND status IN ({_marks(PENDING_STATUSES)}) RETURNING id"
)
UPDATE_HELD = "UPDATE billing_dunning_events SET "
HELD = "WHERE id = ? AND claimed_by = ? AND status = 'sending'"
#: The invoice's dunning_undeliverable alert, opened with the skipped step that no channel
#: could deliver, in the same transaction; one unresolved alert per invoice.
OPEN_UNDELIVERABLE = (
    "INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id, "
    "amount_due, currency, last_failure, details, created_at, updated_at) "
    "SELECT 'dunning_undeliverable', 'open', 'dunning_undeliverable:' || d.invoice_id, "
    "d.customer_id, d.invoice_id, "
    "CASE WHEN i.amount_remaining <> 0 THEN i.amount_remaining ELSE i.amount_due END, "
    "i.currency, ?, ?, ?, ? FROM billing_dunning_events d "
    "LEFT JOIN billing_invoices i ON i.id = d.invoice_id "
    "WHERE d.id = ? AND d.claimed_by = ? AND d.status = 'skipped' "
    f"AND (i.status IS NULL OR i.status NOT IN {_SETTLED}) "
    "ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING RETURNING id"
)
#: Why a step left mid-send waits for a person, by whether it was confirmed.
REVIEW_CONFIRMED = (
    "the run stopped after confirming this message, so the provider may have it: check "
    "the provider's log, then mark-sent or requeue"
)
REVIEW_UNCONFIRMED = "the run stopped before handing this message to any provider: requeue sends it"
#: The step's customer is exempt from dunning now (``billing_dunning_exemptions``).
CUSTOMER_EXEMPT = (
    "EXISTS (SELECT 1 FROM billing_dunning_exemptions x "
    "WHERE x.customer_id = billing_dunning_events.customer_id)"
)


def _step_row(step: StepDraft, now: datetime) -> tuple[Any, ...]:
    return (
        step.invoice_id,
        step.customer_id,
        step.alert_id,
        step.day,
        step.channel,
        step.template,
        step.due_at,
        now,
        now,
    )


class DunningSql(ExemptionsSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    # --- the seam used by event processing (call inside the caller's transaction) ---
    def _schedule_steps_in_tx(self, steps: Sequence[StepDraft], now: datetime) -> int:
        """Insert the steps; one per invoice, day and channel, so planning twice is a no-op.
        Returns how many were new."""
        cursor = self._send_steps(steps, now)
        return 0 if cursor is None else len(cursor.fetchall())

    def _send_steps(self, steps: Sequence[StepDraft], now: datetime) -> Cursor | None:
        """``_schedule_steps_in_tx`` in one statement, without reading the answer: one row
        per step that was new. (Batched event processing reads it at the end of its batch.)"""
        if not steps:
            return None
        values = ", ".join(STEP_VALUES for _ in steps)
        params = [value for step in steps for value in _step_row(step, now)]
        return self._execute(f"{INSERT_STEPS} {values} {ON_STEP_CONFLICT}", params)

    def _send_canceled_steps(
        self, steps: Sequence[StepDraft], reason: str, now: datetime
    ) -> Cursor | None:
        """The steps of a failure whose invoice was settled before it arrived: inserted
        canceled with the settlement's ``reason``, as if they had been scheduled before it.
        One row per step that was new, unread."""
        if not steps:
            return None
        values = ", ".join(CANCELED_STEP_VALUES for _ in steps)
        params = [value for step in steps for value in (*_step_row(step, now), reason)]
        return self._execute(f"{INSERT_CANCELED_STEPS} {values} {ON_STEP_CONFLICT}", params)

    def _cancel_pending_steps_in_tx(self, invoice_id: str, reason: str, now: datetime) -> int:
        """Cancel every step of the invoice not yet sent; returns how many.

        Steps in ``sending`` are canceled too: the run holding one confirms it just before
        handing the message over (``confirm_sends``), so the cancellation stops the send.
        """
        return len(self._send_cancel_pending_steps(invoice_id, reason, now).fetchall())

    def _send_cancel_pending_steps(self, invoice_id: str, reason: str, now: datetime) -> Cursor:
        """``_cancel_pending_steps_in_tx`` without reading the answer: one row per step
        canceled."""
        return self._execute(CANCEL_PENDING, (reason, now, invoice_id, *PENDING_STATUSES))

    # --- public wrappers of the seam -------------------------------------------
    def schedule_steps(self, steps: Sequence[StepDraft], now: datetime) -> int:
        # Chunks keep each statement under SQLite's limit on bound parameters.
        with self._transaction():
            return sum(self._schedule_steps_in_tx(batch, now) for batch in chunked(steps, ID_BATCH))

    def cancel_pending_steps(self, invoice_id: str, reason: str, now: datetime) -> int:
        with self._transaction():
            return self._cancel_pending_steps_in_tx(invoice_id, reason, now)

    # --- rows ------------------------------------------------------------------
    def _step(self, row: Sequence[Any]) -> DunningStep:
        from cloudgreet_billing.domain.dunning import DunningStep

        return DunningStep(
            id=int(row[0]),
            invoice_id=row[1],
            customer_id=row[2],
            alert_id=None if row[3] is None else int(row[3]),
            day=int(row[4]),
            channel=row[5],
            template=row[6],
            status=row[7],
            due_at=self._time(row[8]),
            sent_at=self._optional_time(row[9]),
            attempts=int(row[10]),
            last_error=row[11],
            reason=row[12],
            provider_message_id=row[13],
            claimed_by=row[14],
            lease_expires_at=self._optional_time(row[15]),
            confirmed_at=self._optional_time(row[16]),
        )

    def _facts(self, invoice_id: str, customer_id: str, facts: Sequence[Any]) -> InvoiceFacts:
        """``FACT_COLUMNS`` as a message needs them, with the freshest contact we know."""
        from cloudgreet_billing.domain.dunning import (
            CustomerContact,
            InvoiceContact,
            InvoiceFacts,
            freshest_contact,
        )

        customer = None
        if facts[11] is not None:
            customer = CustomerContact(
                email=facts[12],
                phone=facts[13],
                name=facts[14],
                deleted=bool(facts[15]),
                observed_at=self._time(facts[16]),
            )
        contact = freshest_contact(
            customer,
            InvoiceContact(
                email=facts[7],
                phone=facts[8],
                name=facts[9],
                finalized_at=self._optional_time(facts[10]),
            ),
        )
        return InvoiceFacts(
            invoice_id=invoice_id,
            customer_id=customer_id,
            status=facts[0],
            number=facts[1],
            amount_due=None if facts[2] is None else int(facts[2]),
            amount_remaining=None if facts[3] is None else int(facts[3]),
            currency=facts[4],
            hosted_invoice_url=facts[5],
            first_failed_at=self._optional_time(facts[6]),
            customer_name=contact.name,
            email=contact.email,
            phone=contact.phone,
            customer_deleted=contact.customer_deleted,
            next_payment_attempt=self._optional_time(facts[17]),
            decline_code=facts[18],
            advice_code=facts[19],
        )

    def _claimed(
        self, row: Sequence[Any], timelines: _Timelines, exemptions: Mapping[str, Exemption]
    ) -> ClaimedStep:
        from cloudgreet_billing.domain.dunning import ClaimedStep

        step = self._step(row)
        latest_due, channels = timelines
        return ClaimedStep(
            step=step,
            invoice=self._facts(step.invoice_id, step.customer_id, row[STEP_WIDTH:]),
            superseded=step.day < latest_due.get(step.invoice_id, step.day),
            channels=channels.get(step.invoice_id, frozenset({step.channel})),
            exemption=exemptions.get(step.customer_id),
        )

    def _timelines(self, invoice_ids: set[str], now: datetime) -> _Timelines:
        """Per invoice, the last day whose step is due (or already out): catching up sends
        only that one; and the channels its steps use. Filtered here rather than in SQL so
        that the lookup always uses the (invoice_id, day, channel) index, whatever the
        planner's statistics say."""
        latest: dict[str, int] = {}
        channels: dict[str, frozenset[str]] = {}
        for batch in chunked(sorted(invoice_ids), ID_BATCH):
            rows = self._execute(
                "SELECT invoice_id, day, status, due_at, channel FROM billing_dunning_events "
                f"WHERE invoice_id IN ({_marks(batch)})",
                batch,
            ).fetchall()
            for invoice_id, day, status, due_at, channel in rows:
                channels[invoice_id] = channels.get(invoice_id, frozenset()) | {channel}
                if status in SUPERSEDING_STATUSES and self._time(due_at) <= now:
                    latest[invoice_id] = max(int(day), latest.get(invoice_id, 0))
        return latest, channels

    def _claimed_steps(self, rows: Sequence[Sequence[Any]], now: datetime) -> list[ClaimedStep]:
        """The rows as a run sees them, read in the claim's transaction: with each
        invoice's timeline and each customer's exemption, if any."""
        if not rows:
            return []
        timelines = self._timelines({row[1] for row in rows}, now)
        exemptions = self._exemptions_in_tx({row[2] for row in rows})
        return [self._claimed(row, timelines, exemptions) for row in rows]

    # --- a run -----------------------------------------------------------------
    def expire_leases(self, now: datetime) -> int:
        with self._transaction():
            cursor = self._execute(
                "UPDATE billing_dunning_events SET status = 'needs_review', "
                "reason = CASE WHEN confirmed_at IS NULL THEN ? ELSE ? END, "
                "updated_at = ? WHERE status = 'sending' AND lease_expires_at < ?",
                (REVIEW_UNCONFIRMED, REVIEW_CONFIRMED, now, now),
            )
        return max(cursor.rowcount, 0)

    def count_needs_review(self) -> int:
        row = self._execute(
            "SELECT count(*) FROM billing_dunning_events WHERE status = 'needs_review'"
        ).fetchone()
        return int(row[0]) if row else 0

    def count_due_steps(self, now: datetime) -> int:
        row = self._execute(
            f"SELECT count(*) FROM billing_dunning_events d WHERE {DUE}", (now,)
        ).fetchone()
        return int(row[0]) if row else 0

    def due_steps(self, now: datetime, limit: int | None) -> list[ClaimedStep]:
        query = f"{CLAIMED_SELECT} WHERE {DUE} ORDER BY d.due_at, d.id"
        params: list[Any] = [now]
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return self._claimed_steps(self._execute(query, params).fetchall(), now)

    def _lock_due_step_ids(self, now: datetime, limit: int) -> list[int]:
        """Due step ids for the claim, inside its transaction. SQLite's BEGIN IMMEDIATE
        already excludes other writers; PostgreSQL overrides this with SKIP LOCKED."""
        rows = self._execute(
            f"SELECT d.id FROM billing_dunning_events d WHERE {DUE} "
            "ORDER BY d.due_at, d.id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def claim_due_steps(
        self, *, now: datetime, lease_until: datetime, run_id: str, limit: int
    ) -> list[ClaimedStep]:
        rows: list[Sequence[Any]] = []
        with self._transaction():
            ids: list[int] = []
            for batch in chunked(self._lock_due_step_ids(now, limit), ID_BATCH):
                # The status condition keeps the claim exclusive even where the dialect
                # could not lock the rows it picked.
                updated = self._execute(
                    "UPDATE billing_dunning_events SET status = 'sending', claimed_at = ?, "
                    "lease_expires_at = ?, claimed_by = ?, confirmed_at = NULL, updated_at = ? "
                    f"WHERE id IN ({_marks(batch)}) AND status = 'scheduled' RETURNING id",
                    (now, lease_until, run_id, now, *batch),
                ).fetchall()
                ids.extend(int(row[0]) for row in updated)
            for batch in chunked(ids, ID_BATCH):
                query = f"{CLAIMED_SELECT} WHERE d.id IN ({_marks(batch)})"
                rows.extend(self._execute(query, batch).fetchall())
            claimed = self._claimed_steps(rows, now)
        claimed.sort(key=lambda item: (item.step.due_at, item.step.id))
        return claimed

    def confirm_sends(
        self,
        step_ids: Sequence[int],
        run_id: str,
        now: datetime,
        lease_until: datetime | None = None,
    ) -> set[int]:
        if not step_ids:
            return set()
        # Renewing the lease here means a slow provider cannot let another run expire a
        # step this run is about to send. ``confirmed_at`` tells a step left mid-send that
        # may have gone out from one that never left. An exemption committed since the
        # claim stops the message here, as a payment does.
        rows = self._execute(
            f"{UPDATE_HELD}attempts = attempts + 1, confirmed_at = ?, updated_at = ?, "
            "lease_expires_at = COALESCE(?, lease_expires_at) "
            f"WHERE id IN ({_marks(step_ids)}) AND claimed_by = ? AND status = 'sending' "
            "AND NOT EXISTS (SELECT 1 FROM billing_invoices i "
            f"WHERE i.id = billing_dunning_events.invoice_id AND i.status IN {_SETTLED}) "
            f"AND NOT {CUSTOMER_EXEMPT} "
            "RETURNING id",
            (now, now, lease_until, *step_ids, run_id, *SETTLED_INVOICE_STATUSES),
        ).fetchall()
        return {int(row[0]) for row in rows}

    def record_step_outcomes(
        self,
        outcomes: Sequence[StepOutcome],
        run_id: str,
        now: datetime,
        *,
        actor: str = "dunning run",
    ) -> int:
        sent = [
            (now, o.provider_message_id, now, o.step_id, run_id)
            for o in outcomes
            if o.status == "sent"
        ]
        failed = [(o.error, now, o.step_id, run_id) for o in outcomes if o.status == "failed"]
        closed = [
            (o.status, o.reason, now, o.step_id, run_id)
            for o in outcomes
            if o.status in ("skipped", "canceled")
        ]
        unknown = {o.status for o in outcomes} - {"sent", "failed", "skipped", "canceled"}
        if unknown:
            raise ValueError(f"not an outcome status: {', '.join(sorted(unknown))}")
        recorded = 0
        with self._transaction():
            if sent:
                # It went out: that is the truth even if the step was canceled or its lease
                # expired while the message was on its way.
                recorded += self._executemany(
                    f"{UPDATE_HELD}status = 'sent', sent_at = ?, provider_message_id = ?, "
                    "last_error = NULL, lease_expires_at = NULL, updated_at = ? "
                    "WHERE id = ? AND claimed_by = ? "
                    "AND status IN ('sending', 'canceled', 'needs_review')",
                    sent,
                )
            if failed:
                recorded += self._executemany(
                    f"{UPDATE_HELD}status = 'failed', last_error = ?, lease_expires_at = NULL, "
                    f"updated_at = ? {HELD}",
                    failed,
                )
            if closed:
                recorded += self._executemany(
                    f"{UPDATE_HELD}status = ?, reason = ?, lease_expires_at = NULL, "
                    f"updated_at = ? {HELD}",
                    closed,
                )
            for outcome in outcomes:
                if outcome.undeliverable and outcome.status == "skipped":
                    self._open_undeliverable_alert_in_tx(outcome, run_id, actor, now)
        return recorded

    def _open_undeliverable_alert_in_tx(
        self, outcome: StepOutcome, run_id: str, actor: str, now: datetime
    ) -> None:
        from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft

        details: dict[str, Any] = {"step_id": outcome.step_id, "run_id": run_id}
        row = self._execute(
            OPEN_UNDELIVERABLE,
            (
                outcome.reason,
                self._json_param(details),
                now,
                now,
                outcome.step_id,
                run_id,
                *SETTLED_INVOICE_STATUSES,
            ),
        ).fetchone()
        if row is not None:
            target = f"alert:{int(row[0])}"
            self._insert_audit(
                AuditDraft(actor, "alert.open", target, "opened", details=details), now
            )

    def release_claims(self, step_ids: Sequence[int], run_id: str, now: datetime) -> int:
        if not step_ids:
            return 0
        with self._transaction():
            return self._executemany(
                f"{UPDATE_HELD}status = 'scheduled', claimed_at = NULL, lease_expires_at = NULL, "
                f"claimed_by = NULL, confirmed_at = NULL, updated_at = ? {HELD}",
                [(now, step_id, run_id) for step_id in step_ids],
            )

    # --- operators ---------------------------------------------------------------
    @staticmethod
    def _step_filter(
        statuses: Sequence[str] | None,
        invoice_id: str | None,
        alert_id: int | None,
        customer_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            where.append(f"d.status IN ({_marks(statuses)})")
            params.extend(statuses)
        for clause, value in (
            ("d.invoice_id = ?", invoice_id),
            ("d.alert_id = ?", alert_id),
            ("d.customer_id = ?", customer_id),
            ("d.due_at >= ?", since),
            ("d.due_at < ?", until),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        return (f" WHERE {' AND '.join(where)}" if where else ""), params

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
        condition, params = self._step_filter(
            statuses, invoice_id, alert_id, customer_id, since, until
        )
        query = STEP_SELECT + condition + " ORDER BY d.due_at, d.id"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [self._step(row) for row in self._execute(query, params).fetchall()]

    def count_steps(
        self,
        *,
        statuses: Sequence[str] | None = None,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        condition, params = self._step_filter(statuses, invoice_id, None, customer_id, since, until)
        row = self._execute(
            f"SELECT count(*) FROM billing_dunning_events d{condition}", params
        ).fetchone()
        return int(row[0]) if row else 0

    def get_step(self, step_id: int) -> DunningStep | None:
        row = self._execute(f"{STEP_SELECT} WHERE d.id = ?", (step_id,)).fetchone()
        return None if row is None else self._step(row)

    def mark_step_sent(
        self, step_id: int, from_statuses: Sequence[str], reason: str, now: datetime
    ) -> DunningStep | None:
        with self._transaction():
            row = self._execute(
                "UPDATE billing_dunning_events SET status = 'sent', sent_at = ?, reason = ?, "
                "claimed_by = NULL, lease_expires_at = NULL, updated_at = ? "
                f"WHERE id = ? AND status IN ({_marks(from_statuses)}) RETURNING id",
                (now, reason, now, step_id, *from_statuses),
            ).fetchone()
        return None if row is None else self.get_step(step_id)

    def requeue_step(
        self, step_id: int, from_statuses: Sequence[str], now: datetime
    ) -> DunningStep | None:
        with self._transaction():
            row = self._execute(
                "UPDATE billing_dunning_events SET status = 'scheduled', reason = NULL, "
                "claimed_at = NULL, claimed_by = NULL, lease_expires_at = NULL, "
                "confirmed_at = NULL, updated_at = ? "
                f"WHERE id = ? AND status IN ({_marks(from_statuses)}) RETURNING id",
                (now, step_id, *from_statuses),
            ).fetchone()
        return None if row is None else self.get_step(step_id)

    def unmark_step_sent(
        self, step_id: int, *, marked_reason: str, status: str, reason: str | None, now: datetime
    ) -> DunningStep | None:
        with self._transaction():
            row = self._execute(
                "UPDATE billing_dunning_events SET status = ?, sent_at = NULL, reason = ?, "
                "updated_at = ? WHERE id = ? AND status = 'sent' AND reason = ? RETURNING id",
                (status, reason, now, step_id, marked_reason),
            ).fetchone()
        return None if row is None else self.get_step(step_id)

    def invoice_facts(self, invoice_id: str) -> InvoiceFacts | None:
        row = self._execute(
            f"SELECT i.customer_id, {FACT_COLUMNS} FROM billing_invoices i "
            "LEFT JOIN billing_customers c ON c.id = i.customer_id WHERE i.id = ?",
            (invoice_id,),
        ).fetchone()
        return None if row is None else self._facts(invoice_id, row[0], row[1:])

    def dunning_reach(self, invoice_ids: Sequence[str] | None = None) -> list[InvoiceReach]:
        from cloudgreet_billing.domain.dunning import CHANNELS, InvoiceReach

        # One row per invoice: which channels its steps use, and which its scheduled steps
        # use (grouped by the two primary keys, so the other columns may be selected).
        uses = ", ".join(
            f"max(CASE WHEN d.channel = '{channel}' THEN 1 ELSE 0 END), "
            f"max(CASE WHEN d.channel = '{channel}' AND d.status = 'scheduled' "
            "THEN 1 ELSE 0 END)"
            for channel in CHANNELS
        )
        query = (
            f"SELECT i.id, i.customer_id, {FACT_COLUMNS}, {uses} "
            "FROM billing_invoices i JOIN billing_dunning_events d ON d.invoice_id = i.id "
            "LEFT JOIN billing_customers c ON c.id = i.customer_id "
            f"WHERE i.status NOT IN {_SETTLED}"
        )
        rows: list[Sequence[Any]] = []
        if invoice_ids is None:
            rows = self._execute(
                f"{query} GROUP BY i.id, c.id", SETTLED_INVOICE_STATUSES
            ).fetchall()
        else:
            for batch in chunked(sorted(set(invoice_ids)), ID_BATCH):
                rows.extend(
                    self._execute(
                        f"{query} AND i.id IN ({_marks(batch)}) GROUP BY i.id, c.id",
                        (*SETTLED_INVOICE_STATUSES, *batch),
                    ).fetchall()
                )
        width = 2 * len(CHANNELS)
        reaches: list[InvoiceReach] = []
        for row in rows:
            flags = row[-width:]
            reaches.append(
                InvoiceReach(
                    self._facts(row[0], row[1], row[2:-width]),
                    frozenset(c for n, c in enumerate(CHANNELS) if flags[2 * n]),
                    frozenset(c for n, c in enumerate(CHANNELS) if flags[2 * n + 1]),
                )
            )
        reaches.sort(key=lambda reach: reach.facts.invoice_id)
        return reaches

    # --- escalation --------------------------------------------------------------
    def escalation_candidates(self, threshold: int) -> list[EscalationCandidate]:
        from cloudgreet_billing.domain.dunning import EscalationCandidate

        rows = self._execute(
            "SELECT done.invoice_id, done.customer_id, done.completed, i.amount_remaining, "
            "i.currency, done.alert_id FROM ("
            "SELECT d.invoice_id, min(d.customer_id) AS customer_id, count(*) AS completed, "
            "max(d.alert_id) AS alert_id FROM billing_dunning_events d "
            f"WHERE d.status IN ({_marks(COMPLETED_STATUSES)}) "
            "GROUP BY d.invoice_id HAVING count(*) >= ?) done "
            "LEFT JOIN billing_invoices i ON i.id = done.invoice_id "
            f"WHERE (i.status IS NULL OR i.status NOT IN {_SETTLED}) "
            "AND NOT EXISTS (SELECT 1 FROM billing_alerts a WHERE a.type = 'dunning_exhausted' "
            "AND a.invoice_id = done.invoice_id) "
            # Whoever exempted the customer owns the follow-up while the exemption lasts.
            "AND NOT EXISTS (SELECT 1 FROM billing_dunning_exemptions x "
            "WHERE x.customer_id = done.customer_id) ORDER BY done.invoice_id",
            (*COMPLETED_STATUSES, threshold, *SETTLED_INVOICE_STATUSES),
        ).fetchall()
        return [
            EscalationCandidate(
                invoice_id=row[0],
                customer_id=row[1],
                completed=int(row[2]),
                amount_due=None if row[3] is None else int(row[3]),
                currency=row[4],
                alert_id=None if row[5] is None else int(row[5]),
            )
            for row in rows
        ]

    def open_exhaustion_alert(
        self, candidate: EscalationCandidate, details: Mapping[str, Any], now: datetime
    ) -> int | None:
        # Once per invoice, ever: the NOT EXISTS covers resolved alerts, and the partial
        # unique index settles two runs racing to open it.
        with self._transaction():
            row = self._execute(
                "INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id, "
                "amount_due, currency, details, created_at, updated_at) "
                "SELECT 'dunning_exhausted', 'open', ?, ?, ?, ?, ?, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM billing_alerts a "
                "WHERE a.type = 'dunning_exhausted' AND a.invoice_id = ?) "
                "ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING RETURNING id",
                (
                    f"dunning_exhausted:{candidate.invoice_id}",
                    candidate.customer_id,
                    candidate.invoice_id,
                    candidate.amount_due,
                    candidate.currency,
                    self._json_param(dict(details)),
                    now,
                    now,
                    candidate.invoice_id,
                ),
            ).fetchone()
        return None if row is None else int(row[0])

    def update_alert_details(
        self, alert_id: int, details: Mapping[str, Any], now: datetime
    ) -> None:
        with self._transaction():
            self._execute(
                "UPDATE billing_alerts SET details = ?, updated_at = ? "
                "WHERE id = ? AND type = 'dunning_exhausted'",
                (self._json_param(dict(details)), now, alert_id),
            )
