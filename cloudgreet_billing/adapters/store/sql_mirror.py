"""Mirrored Stripe invoices, subscriptions and customers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.sql_audit import AuditSql
from cloudgreet_billing.adapters.store.sql_base import Cursor
from cloudgreet_billing.domain.statuses import SETTLED_INVOICE_STATUSES

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
    from cloudgreet_billing.domain.alerts import AlertDraft
    from cloudgreet_billing.domain.dunning import DunningPlanner, StepDraft
    from cloudgreet_billing.domain.events import EventPlan, EventResult
    from cloudgreet_billing.domain.mirror import (
        MirroredCustomer,
        MirroredInvoice,
        MirroredSubscription,
    )
    from cloudgreet_billing.domain.quarantine import RejectedEvent

INVOICE_COLUMNS = (
    "id, customer_id, subscription_id, number, status, currency, amount_due, amount_paid, "
    "amount_remaining, total, total_excluding_tax, attempt_count, attempted, "
    "next_payment_attempt, due_date, hosted_invoice_url, livemode, raw, stripe_created, "
    "first_failed_at, last_failure_code, last_failure_message, "
    "customer_email, customer_phone, customer_name, finalized_at"
)
_INVOICE_UPDATED = [
    column.strip()
    for column in INVOICE_COLUMNS.split(",")
    if column.strip() not in ("id", "first_failed_at", "last_failure_code", "last_failure_message")
]
# Same rule as domain.mirror.invoice_transition_allowed, applied where the row is locked,
# so two workers cannot race a settled invoice back open.
_INVOICE_GUARD = (
    "billing_invoices.stripe_updated_at <= excluded.stripe_updated_at AND ("
    "billing_invoices.status NOT IN ('paid', 'void', 'uncollectible') "
    "OR excluded.status = billing_invoices.status "
    "OR (billing_invoices.status = 'uncollectible' AND excluded.status IN ('paid', 'void')))"
)
UPSERT_INVOICE = (
    "INSERT INTO billing_invoices (id, customer_id, subscription_id, number, status, currency, "
    "amount_due, amount_paid, amount_remaining, total, total_excluding_tax, attempt_count, "
    "attempted, next_payment_attempt, due_date, hosted_invoice_url, livemode, raw, "
    "stripe_created, customer_email, customer_phone, customer_name, finalized_at, "
    "stripe_updated_at, synced_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _INVOICE_UPDATED)
    + ", stripe_updated_at = excluded.stripe_updated_at, synced_at = excluded.synced_at "
    f"WHERE {_INVOICE_GUARD} RETURNING id"
)
SUBSCRIPTION_COLUMNS = (
    "id, customer_id, status, currency, cancel_at_period_end, current_period_end, "
    "collection_paused, livemode, raw, stripe_created"
)
CUSTOMER_COLUMNS = (
    "id, email, name, phone, currency, delinquent, deleted, livemode, raw, stripe_created"
)


def _upsert(table: str, columns: str) -> str:
    names = [column.strip() for column in columns.split(",")]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names[1:])
    values = ", ".join("?" for _ in range(len(names) + 2))
    return (
        f"INSERT INTO {table} ({columns}, stripe_updated_at, synced_at) VALUES ({values}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}, "
        "stripe_updated_at = excluded.stripe_updated_at, synced_at = excluded.synced_at "
        f"WHERE {table}.stripe_updated_at <= excluded.stripe_updated_at RETURNING id"
    )


UPSERT_SUBSCRIPTION = _upsert("billing_subscriptions", SUBSCRIPTION_COLUMNS)
UPSERT_CUSTOMER = _upsert("billing_customers", CUSTOMER_COLUMNS)


RECORD_EVENTS = (
    "INSERT INTO billing_stripe_events (id, type, stripe_created, livemode, outcome, source, "
    "processed_at) VALUES"
)
ON_NEW_EVENTS = "ON CONFLICT (id) DO NOTHING RETURNING id"
RECORD_EVENT = f"{RECORD_EVENTS} (?, ?, ?, ?, ?, ?, ?) {ON_NEW_EVENTS}"


def _event_row(plan: EventPlan, now: datetime) -> tuple[Any, ...]:
    return (plan.event_id, plan.type, plan.created, plan.livemode, plan.outcome, plan.source, now)


def _payload_of(plan: EventPlan) -> Mapping[str, Any]:
    """What to quarantine of a plan: the event as received, or (for a plan made without
    it) what the plan knows of the event, so that it is still kept under its own id."""
    if plan.event:
        return plan.event
    return {
        "id": plan.event_id,
        "object": "event",
        "type": plan.type,
        "created": int(plan.created.timestamp()),
        "livemode": plan.livemode,
    }


def failure_reason(exc: BaseException) -> str:
    """An exception as a quarantine reason: its type and the first line of its message."""
    from cloudgreet_billing.domain.quarantine import one_line
    from cloudgreet_billing.errors import BillingError

    if isinstance(exc, BillingError):
        return one_line(exc.message)
    return one_line(f"{type(exc).__name__}: {one_line(str(exc))}".rstrip(": "))


class _ReadRows(Cursor):
    """Rows already read from a cursor, read again the same way."""

    def __init__(self, rows: list[Sequence[Any]]) -> None:
        self._rows = rows
        self.rowcount = len(rows)

    def fetchone(self) -> Sequence[Any] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Sequence[Any]]:
        rows, self._rows = self._rows, []
        return rows


@dataclass
class _SentEvent:
    """An event's statements sent, with the answers not read yet (see ``_finish_event_in_tx``)."""

    opened: list[int] = field(default_factory=list)
    scheduled: Cursor | None = None
    resolved: Cursor | None = None
    canceled: Cursor | None = None


# The earliest failure is kept (dunning counts from it). The failure text is the latest
# failure's: this one's if it carried the newest state of the invoice, or if its attempt
# number reaches the attempt count of the newer state (the last attempt before it), so a
# failure delivered late never overwrites a later one, in any order of delivery.
_LATEST_FAILURE = "(stripe_updated_at <= ? OR ? >= attempt_count)"
RECORD_FAILURE = (
    "UPDATE billing_invoices SET "
    "first_failed_at = CASE WHEN first_failed_at IS NULL OR first_failed_at > ? THEN ? "
    "ELSE first_failed_at END, "
    f"last_failure_code = CASE WHEN {_LATEST_FAILURE} THEN ? ELSE last_failure_code END, "
    f"last_failure_message = CASE WHEN {_LATEST_FAILURE} THEN ? "
    "ELSE last_failure_message END "
    "WHERE id = ? RETURNING status, first_failed_at"
)
# Moves still-scheduled steps earlier when an older failure, delivered late, moves the
# invoice's first failure earlier: the same due times as if events had come in order.
REPLAN_STEP = (
    "UPDATE billing_dunning_events SET due_at = ?, updated_at = ? "
    "WHERE invoice_id = ? AND day = ? AND channel = ? AND status = 'scheduled' AND due_at > ?"
)


class MirrorSql(AuditSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    if TYPE_CHECKING:
        # Provided by ``SqlStore`` (core), ``AlertsSql``, ``DunningSql`` and the dialects.
        def _insert_audit(self, entry: AuditDraft, now: datetime) -> int: ...

        def _raise_alert_in_tx(self, draft: AlertDraft, now: datetime) -> tuple[int, bool]: ...

        def _resolve_invoice_alerts_in_tx(
            self, invoice_id: str, resolution: str, now: datetime
        ) -> list[int]: ...

        def _send_resolve_invoice_alerts(
            self, invoice_id: str, resolution: str, now: datetime
        ) -> Cursor: ...

        def _send_steps(self, steps: Sequence[StepDraft], now: datetime) -> Cursor | None: ...

        def _send_cancel_pending_steps(
            self, invoice_id: str, reason: str, now: datetime
        ) -> Cursor: ...

        def _quarantine_events_in_tx(
            self, rejected: Sequence[RejectedEvent], now: datetime
        ) -> list[EventResult]: ...

        def _settle_redelivered_in_tx(self, now: datetime) -> None: ...

    def _invoice_params(
        self, invoice: MirroredInvoice, observed_at: datetime, now: datetime
    ) -> tuple[Any, ...]:
        return (
            invoice.id,
            invoice.customer_id,
            invoice.subscription_id,
            invoice.number,
            invoice.status,
            invoice.currency,
            invoice.amount_due,
            invoice.amount_paid,
            invoice.amount_remaining,
            invoice.total,
            invoice.total_excluding_tax,
            invoice.attempt_count,
            invoice.attempted,
            invoice.next_payment_attempt,
            invoice.due_date,
            invoice.hosted_invoice_url,
            invoice.livemode,
            self._json_param(dict(invoice.raw)),
            invoice.stripe_created,
            invoice.customer_email,
            invoice.customer_phone,
            invoice.customer_name,
            invoice.finalized_at,
            observed_at,
            now,
        )

    def upsert_invoice(
        self, invoice: MirroredInvoice, observed_at: datetime, now: datetime
    ) -> bool:
        with self._transaction():
            params = self._invoice_params(invoice, observed_at, now)
            return self._execute(UPSERT_INVOICE, params).fetchone() is not None

    def upsert_invoices(
        self, invoices: Iterable[MirroredInvoice], observed_at: datetime, now: datetime
    ) -> int:
        changed = 0
        with self._transaction():
            for invoice in invoices:
                params = self._invoice_params(invoice, observed_at, now)
                changed += self._execute(UPSERT_INVOICE, params).fetchone() is not None
        return changed

    def _subscription_params(
        self, subscription: MirroredSubscription, observed_at: datetime, now: datetime
    ) -> tuple[Any, ...]:
        return (
            subscription.id,
            subscription.customer_id,
            subscription.status,
            subscription.currency,
            subscription.cancel_at_period_end,
            subscription.current_period_end,
            subscription.collection_paused,
            subscription.livemode,
            self._json_param(dict(subscription.raw)),
            subscription.stripe_created,
            observed_at,
            now,
        )

    def _with_known_discounts(self, subscription: MirroredSubscription) -> MirroredSubscription:
        """Events list a subscription's discounts by id only; keep the expanded discounts
        the mirror already has for those ids (read only when there are such ids)."""
        from cloudgreet_billing.domain.mirror import unexpanded_discount_ids, with_known_discounts

        if not unexpanded_discount_ids(subscription.raw):
            return subscription
        row = self._execute(
            "SELECT raw FROM billing_subscriptions WHERE id = ?", (subscription.id,)
        ).fetchone()
        if row is None:
            return subscription
        previous = self._json_value(row[0])
        return replace(subscription, raw=with_known_discounts(subscription.raw, previous))

    def upsert_subscription(
        self, subscription: MirroredSubscription, observed_at: datetime, now: datetime
    ) -> bool:
        params = self._subscription_params(subscription, observed_at, now)
        with self._transaction():
            return self._execute(UPSERT_SUBSCRIPTION, params).fetchone() is not None

    def _customer_params(
        self, customer: MirroredCustomer, observed_at: datetime, now: datetime
    ) -> tuple[Any, ...]:
        return (
            customer.id,
            customer.email,
            customer.name,
            customer.phone,
            customer.currency,
            customer.delinquent,
            customer.deleted,
            customer.livemode,
            self._json_param(dict(customer.raw)),
            customer.stripe_created,
            observed_at,
            now,
        )

    def upsert_customer(
        self, customer: MirroredCustomer, observed_at: datetime, now: datetime
    ) -> bool:
        params = self._customer_params(customer, observed_at, now)
        with self._transaction():
            return self._execute(UPSERT_CUSTOMER, params).fetchone() is not None

    def _invoice(self, row: Sequence[Any]) -> MirroredInvoice:
        from cloudgreet_billing.domain.mirror import MirroredInvoice

        return MirroredInvoice(
            id=row[0],
            customer_id=row[1],
            subscription_id=row[2],
            number=row[3],
            status=row[4],
            currency=row[5],
            amount_due=int(row[6]),
            amount_paid=int(row[7]),
            amount_remaining=int(row[8]),
            total=int(row[9]),
            total_excluding_tax=None if row[10] is None else int(row[10]),
            attempt_count=int(row[11]),
            attempted=bool(row[12]),
            next_payment_attempt=self._optional_time(row[13]),
            due_date=self._optional_time(row[14]),
            hosted_invoice_url=row[15],
            livemode=bool(row[16]),
            raw=self._json_value(row[17]),
            stripe_created=self._time(row[18]),
            first_failed_at=self._optional_time(row[19]),
            last_failure_code=row[20],
            last_failure_message=row[21],
            customer_email=row[22],
            customer_phone=row[23],
            customer_name=row[24],
            finalized_at=self._optional_time(row[25]),
        )

    def get_invoice(self, invoice_id: str) -> MirroredInvoice | None:
        row = self._execute(
            f"SELECT {INVOICE_COLUMNS} FROM billing_invoices WHERE id = ?", (invoice_id,)
        ).fetchone()
        return None if row is None else self._invoice(row)

    def get_customer(self, customer_id: str) -> MirroredCustomer | None:
        row = self._execute(
            f"SELECT {CUSTOMER_COLUMNS} FROM billing_customers WHERE id = ?", (customer_id,)
        ).fetchone()
        if row is None:
            return None
        from cloudgreet_billing.domain.mirror import MirroredCustomer

        return MirroredCustomer(
            id=row[0],
            email=row[1],
            name=row[2],
            phone=row[3],
            currency=row[4],
            delinquent=bool(row[5]),
            deleted=bool(row[6]),
            livemode=bool(row[7]),
            raw=self._json_value(row[8]),
            stripe_created=self._optional_time(row[9]),
        )

    def get_subscription(self, subscription_id: str) -> MirroredSubscription | None:
        row = self._execute(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM billing_subscriptions WHERE id = ?",
            (subscription_id,),
        ).fetchone()
        return None if row is None else self._subscription(row)

    def _subscription(self, row: Sequence[Any]) -> MirroredSubscription:
        from cloudgreet_billing.domain.mirror import MirroredSubscription

        return MirroredSubscription(
            id=row[0],
            customer_id=row[1],
            status=row[2],
            currency=row[3],
            cancel_at_period_end=bool(row[4]),
            current_period_end=self._optional_time(row[5]),
            collection_paused=bool(row[6]),
            livemode=bool(row[7]),
            raw=self._json_value(row[8]),
            stripe_created=self._optional_time(row[9]),
        )

    # --- Stripe events: effects and the processed record in one transaction --------
    def apply_event_plans(
        self,
        plans: Sequence[EventPlan],
        *,
        planner: DunningPlanner,
        now: datetime,
        rejected: Sequence[RejectedEvent] = (),
    ) -> list[EventResult]:
        # Fast path: the whole batch in one transaction, without savepoints; every event is
        # recorded by one statement up front, and what only needs counting (and the audit
        # lines) is read at the end, so that PostgreSQL's pipeline (``_event_batch``) waits
        # for the server only where a later step depends on an answer. Any failure rolls
        # the batch back whole. A fault of the store raises at once (``_unless_store_fault``);
        # any other failure is an event's, and the batch is redone below, one savepoint per
        # event, so that only the failing events are left out, quarantined. Call this
        # outside any open transaction: the fallback relies on the batch's own rollback.
        try:
            with self._event_batch():
                fresh = self._record_events_in_tx(plans, now)
                sent = [
                    self._send_event_in_tx(plan, planner, now) if new else None
                    for plan, new in zip(plans, fresh, strict=True)
                ]
                results = [
                    self._finish_event_in_tx(plan, work, now)
                    for plan, work in zip(plans, sent, strict=True)
                ]
                results += self._quarantine_events_in_tx(rejected, now)
                if any(fresh):
                    self._settle_redelivered_in_tx(now)
                return results
        except Exception as exc:
            self._unless_store_fault(exc)
        results = []
        with self._transaction():
            for plan in plans:
                outcome = self._apply_in_savepoint(plan, planner, now)
                if not isinstance(outcome, BaseException):
                    results.append(outcome)
                    continue
                # The event's own fault: rolled back alone, and kept for an operator.
                from cloudgreet_billing.domain.quarantine import reject

                refused = reject(_payload_of(plan), failure_reason(outcome), plan.source)
                results += self._quarantine_events_in_tx([refused], now)
            results += self._quarantine_events_in_tx(rejected, now)
            self._settle_redelivered_in_tx(now)
        return results

    def _apply_in_savepoint(
        self, plan: EventPlan, planner: DunningPlanner, now: datetime
    ) -> EventResult | Exception:
        """One event, in a savepoint of the open transaction: its result, or the exception
        that rolled it back alone when it is the event's fault (a store fault raises)."""
        try:
            with self._event_savepoint():
                recorded = self._execute(RECORD_EVENT, _event_row(plan, now)).fetchone()
                work = None
                if recorded is not None:
                    work = self._send_event_in_tx(plan, planner, now)
                return self._finish_event_in_tx(plan, work, now)
        except Exception as exc:
            self._unless_store_fault(exc)
            return exc

    def _unless_store_fault(self, exc: Exception) -> None:
        """Raise ``Unavailable`` when ``exc`` is the store's fault, not the event's: the
        one place that tells a retryable failure from a permanent one (``_store_fault``)."""
        from cloudgreet_billing.errors import Unavailable

        if isinstance(exc, Unavailable):
            raise exc
        known = self.explain_failure(exc)
        if known is not None and not isinstance(known, Unavailable):
            # A store that cannot be written, or is no database: no retry cures it.
            raise known from exc
        if self._store_fault(exc):
            raise Unavailable(
                f"the {self.backend} store could not apply the events "
                f"({failure_reason(exc)}); nothing of their batch was written",
                hint="the store is busy, unreachable or refusing writes; retry later",
                code="store_unavailable",
            ) from exc

    def _event_batch(self) -> AbstractContextManager[None]:
        """The transaction of a batch of events; PostgreSQL adds its pipeline mode."""
        return self._transaction()

    def _answer_later(self, cursor: Cursor) -> Cursor:
        """A statement's answer for ``_finish_event_in_tx``: read at once here (an unread
        SQLite statement stays busy, and the next use of its text prepares it again);
        PostgreSQL leaves it unread, so its pipeline does not wait for it."""
        return _ReadRows(cursor.fetchall())

    def _record_events_in_tx(self, plans: Sequence[EventPlan], now: datetime) -> list[bool]:
        """Record every event of the batch as processed, in one statement; for each plan,
        whether it is new (the first of its id in the batch, and not processed before)."""
        first: dict[str, EventPlan] = {}
        for plan in plans:
            first.setdefault(plan.event_id, plan)
        if not first:
            return []
        # In id order, so that concurrent batches take the rows' locks in the same order.
        fresh = self._insert_new_events([_event_row(first[key], now) for key in sorted(first)])
        flags: list[bool] = []
        for plan in plans:
            flags.append(plan.event_id in fresh)
            fresh.discard(plan.event_id)  # a repeat within the batch is a duplicate
        return flags

    def _insert_new_events(self, rows: Sequence[Sequence[Any]]) -> set[str]:
        """Insert ``billing_stripe_events`` rows (``_event_row``); the ids that were new."""
        values = ", ".join(f"({', '.join('?' for _ in rows[0])})" for _ in rows)
        params = [value for row in rows for value in row]
        cursor = self._execute(f"{RECORD_EVENTS} {values} {ON_NEW_EVENTS}", params)
        return {row[0] for row in cursor.fetchall()}

    @contextmanager
    def _event_savepoint(self) -> Iterator[None]:
        """A savepoint inside the open transaction: an error undoes only its own work.
        Plain SQL, the same on both engines (psycopg leaves savepoints it did not make
        alone)."""
        self._execute("SAVEPOINT billing_event")
        try:
            yield
        except BaseException:
            self._execute("ROLLBACK TO SAVEPOINT billing_event")
            self._execute("RELEASE SAVEPOINT billing_event")
            raise
        else:
            self._execute("RELEASE SAVEPOINT billing_event")

    def _send_event_in_tx(
        self, plan: EventPlan, planner: DunningPlanner, now: datetime
    ) -> _SentEvent:
        """The effects of an event just recorded as new. Only what decides the next step is
        read here; the rest is read by ``_finish_event_in_tx``."""
        work = _SentEvent()
        if plan.outcome == "skipped":
            return work
        observed = plan.created
        if plan.customer is not None:
            self._execute(UPSERT_CUSTOMER, self._customer_params(plan.customer, observed, now))
        if plan.subscription is not None:
            subscription = self._with_known_discounts(plan.subscription)
            params = self._subscription_params(subscription, observed, now)
            self._execute(UPSERT_SUBSCRIPTION, params)
        invoice_status: str | None = None
        first_failed_at: datetime | None = None
        if plan.invoice is not None:
            self._execute(UPSERT_INVOICE, self._invoice_params(plan.invoice, observed, now))
            if plan.failure is not None:
                row = self._execute(
                    RECORD_FAILURE,
                    (
                        observed,
                        observed,
                        observed,
                        plan.invoice.attempt_count,
                        plan.failure.code,
                        observed,
                        plan.invoice.attempt_count,
                        plan.failure.message,
                        plan.invoice.id,
                    ),
                ).fetchone()
                assert row is not None
                invoice_status, first_failed_at = row[0], self._time(row[1])
            elif plan.alert is not None:
                current = self._execute(
                    "SELECT status FROM billing_invoices WHERE id = ?", (plan.invoice.id,)
                ).fetchone()
                invoice_status = None if current is None else current[0]
        # A settled invoice is never reopened: a failure processed after the payment (a
        # late or replayed delivery) changes the mirror's failure fields only.
        if plan.alert is not None and invoice_status not in SETTLED_INVOICE_STATUSES:
            alert_id, is_new = self._raise_alert_in_tx(plan.alert, now)
            if is_new:
                work.opened.append(alert_id)
            if plan.alert.type == "invoice_failed" and plan.invoice is not None:
                assert first_failed_at is not None
                steps = planner(
                    invoice_id=plan.invoice.id,
                    customer_id=plan.invoice.customer_id,
                    alert_id=alert_id,
                    first_failed_at=first_failed_at,
                )
                if is_new:
                    if (sent := self._send_steps(steps, now)) is not None:
                        work.scheduled = self._answer_later(sent)
                elif first_failed_at == observed:
                    self._replan_steps_in_tx(steps, now)
        if plan.resolve is not None:
            invoice_id, resolution = plan.resolve
            work.resolved = self._answer_later(
                self._send_resolve_invoice_alerts(invoice_id, resolution, now)
            )
            work.canceled = self._answer_later(
                self._send_cancel_pending_steps(invoice_id, resolution, now)
            )
        return work

    def _finish_event_in_tx(
        self, plan: EventPlan, work: _SentEvent | None, now: datetime
    ) -> EventResult:
        """Read what ``_send_event_in_tx`` left unread, and write the audit lines."""
        from cloudgreet_billing.domain.events import EventResult

        if work is None:
            return EventResult(plan.event_id, "duplicate", plan.created)
        if plan.outcome == "skipped":
            return EventResult(plan.event_id, "skipped", plan.created)
        actor = f"stripe:{plan.source}"
        for alert_id in work.opened:
            self._audit_alert(actor, "alert.open", alert_id, "opened", plan, now)
        scheduled = 0 if work.scheduled is None else len(work.scheduled.fetchall())
        resolved: list[int] = []
        if work.resolved is not None:
            resolved = sorted(int(row[0]) for row in work.resolved.fetchall())
        for alert_id in resolved:
            self._audit_alert(actor, "alert.resolve", alert_id, "resolved", plan, now)
        canceled = 0 if work.canceled is None else len(work.canceled.fetchall())
        return EventResult(
            plan.event_id,
            "applied",
            plan.created,
            alerts_opened=len(work.opened),
            alerts_resolved=len(resolved),
            dunning_scheduled=scheduled,
            dunning_canceled=canceled,
        )

    def _replan_steps_in_tx(self, steps: Sequence[StepDraft], now: datetime) -> None:
        for step in steps:
            self._execute(
                REPLAN_STEP,
                (step.due_at, now, step.invoice_id, step.day, step.channel, step.due_at),
            )

    def _audit_alert(
        self, actor: str, action: str, alert_id: int, outcome: str, plan: EventPlan, now: datetime
    ) -> None:
        from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft

        self._insert_audit(
            AuditDraft(
                actor,
                action,
                f"alert:{alert_id}",
                outcome,
                details={"event": plan.event_id, "type": plan.type},
            ),
            now,
        )

    def event_processed(self, event_id: str) -> bool:
        row = self._execute(
            "SELECT 1 FROM billing_stripe_events WHERE id = ?", (event_id,)
        ).fetchone()
        return row is not None

    def last_event_processed_at(self) -> datetime | None:
        row = self._execute("SELECT max(processed_at) FROM billing_stripe_events").fetchone()
        return None if row is None else self._optional_time(row[0])
