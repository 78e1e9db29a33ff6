"""Mirrored Stripe invoices, subscriptions and customers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.sql_audit import AuditSql
from cloudgreet_billing.adapters.store.sql_base import Cursor, chunked
from cloudgreet_billing.domain.merge import (
    INVOICE_STATUS_RANK,
    NO_EVENT,
    SUBSCRIPTION_STATUS_RANK,
    TERMINAL_SUBSCRIPTION_STATUSES,
)
from cloudgreet_billing.domain.statuses import PENDING_STATUSES, SETTLED_INVOICE_STATUSES

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


def _rank(column: str, ranks: Mapping[str, int]) -> str:
    """A status column as its rank in ``domain.merge`` (constants, never input)."""
    whens = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in ranks.items())
    return f"CASE {column} {whens} END"


def _key(parts: Sequence[str], row: str) -> str:
    """A merge key of ``domain.merge`` as an SQL row value of ``row`` (a table or
    ``excluded``): both engines compare row values left to right."""
    return "(" + ", ".join(part.format(row=row) for part in parts) + ")"


def _newer(parts: Sequence[str], table: str) -> str:
    return f"{_key(parts, 'excluded')} > {_key(parts, table)}"


# domain.merge.invoice_key: (status rank, event created, attempt_count, event id).
_INVOICE_KEY = (
    _rank("{row}.status", INVOICE_STATUS_RANK),
    "{row}.stripe_updated_at",
    "{row}.merge_attempt",
    "{row}.merge_event_id",
)
_INVOICE_NEWER = _newer(_INVOICE_KEY, "billing_invoices")
#: Columns of the object shown: all from the observation with the largest key.
_INVOICE_SHOWN = [
    "customer_id",
    "subscription_id",
    "number",
    "status",
    "currency",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "total",
    "total_excluding_tax",
    "next_payment_attempt",
    "due_date",
    "hosted_invoice_url",
    "livemode",
    "raw",
    "stripe_created",
    "customer_email",
    "customer_phone",
    "customer_name",
    "finalized_at",
    "merge_attempt",
    "merge_event_id",
    "stripe_updated_at",
]
_SETTLEMENT = ("settled_at", "settled_event_id", "settled_resolution")
# domain.merge.settlement_key: the earliest settling event counts.
_EARLIER_SETTLEMENT = (
    "excluded.settled_at IS NOT NULL AND (billing_invoices.settled_at IS NULL OR "
    "(excluded.settled_at, excluded.settled_event_id) < "
    "(billing_invoices.settled_at, billing_invoices.settled_event_id))"
)
_INVOICE_INSERTED = (
    "id, customer_id, subscription_id, number, status, currency, amount_due, amount_paid, "
    "amount_remaining, total, total_excluding_tax, attempt_count, attempted, "
    "next_payment_attempt, due_date, hosted_invoice_url, livemode, raw, stripe_created, "
    "customer_email, customer_phone, customer_name, finalized_at, merge_attempt, "
    "merge_event_id, settled_at, settled_event_id, settled_resolution, stripe_updated_at, "
    "synced_at"
)


def _greater(column: str, table: str) -> str:
    return (
        f"{column} = CASE WHEN excluded.{column} > {table}.{column} "
        f"THEN excluded.{column} ELSE {table}.{column} END"
    )


# No WHERE: every observation is merged (domain.merge), and the row lock the upsert takes
# keeps two workers from racing one another.
UPSERT_INVOICE = (
    f"INSERT INTO billing_invoices ({_INVOICE_INSERTED}) "
    f"VALUES ({', '.join('?' for _ in _INVOICE_INSERTED.split(', '))}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(
        f"{column} = CASE WHEN {_INVOICE_NEWER} THEN excluded.{column} "
        f"ELSE billing_invoices.{column} END"
        for column in _INVOICE_SHOWN
    )
    + ", "
    + ", ".join(_greater(column, "billing_invoices") for column in ("attempt_count", "attempted"))
    + ", "
    + ", ".join(
        f"{column} = CASE WHEN {_EARLIER_SETTLEMENT} THEN excluded.{column} "
        f"ELSE billing_invoices.{column} END"
        for column in _SETTLEMENT
    )
    + ", synced_at = excluded.synced_at "
    "RETURNING status, stripe_updated_at, merge_attempt, merge_event_id"
)
SUBSCRIPTION_COLUMNS = (
    "id, customer_id, status, currency, cancel_at_period_end, current_period_end, "
    "collection_paused, livemode, raw, stripe_created"
)
CUSTOMER_COLUMNS = (
    "id, email, name, phone, currency, delinquent, deleted, livemode, raw, stripe_created"
)
# domain.merge.subscription_key: (terminal, event created, period end, status rank, id).
_TERMINAL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_SUBSCRIPTION_STATUSES))
_SUBSCRIPTION_KEY = (
    f"CASE WHEN {{row}}.status IN ({_TERMINAL}) THEN 1 ELSE 0 END",
    "{row}.stripe_updated_at",
    "COALESCE({row}.current_period_end, {row}.stripe_updated_at)",
    _rank("{row}.status", SUBSCRIPTION_STATUS_RANK),
    "{row}.merge_event_id",
)
# domain.merge.customer_key: (deleted, event created, event id).
_CUSTOMER_KEY = (
    "CASE WHEN {row}.deleted THEN 1 ELSE 0 END",
    "{row}.stripe_updated_at",
    "{row}.merge_event_id",
)


def _upsert(table: str, columns: str, key: Sequence[str]) -> str:
    """Insert, or show the observation when its key is larger (``domain.merge``)."""
    names = [column.strip() for column in columns.split(",")] + ["merge_event_id"]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names[1:])
    values = ", ".join("?" for _ in range(len(names) + 2))
    return (
        f"INSERT INTO {table} ({', '.join(names)}, stripe_updated_at, synced_at) "
        f"VALUES ({values}) ON CONFLICT (id) DO UPDATE SET {updates}, "
        "stripe_updated_at = excluded.stripe_updated_at, synced_at = excluded.synced_at "
        f"WHERE {_newer(key, table)} RETURNING id"
    )


UPSERT_SUBSCRIPTION = _upsert("billing_subscriptions", SUBSCRIPTION_COLUMNS, _SUBSCRIPTION_KEY)
UPSERT_CUSTOMER = _upsert("billing_customers", CUSTOMER_COLUMNS, _CUSTOMER_KEY)


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


#: Invoice ids per read of ``MirrorSql._known_invoices`` (SQLite allows 32,766 parameters).
KNOWN_INVOICES_PER_READ = 500
#: The object stored for an invoice observation that a later statement of the same
#: transaction is certain to replace (``_superseded_invoices``): never committed.
_SUPERSEDED_RAW: Mapping[str, Any] = {}
_ShownKey = tuple[int, datetime, int]


def _superseded_invoices(plans: Sequence[EventPlan], fresh: Sequence[bool]) -> dict[int, bool]:
    """The batch's new invoice events whose object is certainly not the one shown once the
    batch commits, by position: another new event of the batch observes the same invoice
    under a larger merge key (``domain.merge.invoice_key``). Encoding such an object (JSON
    of about 3 KB, the largest cost of an invoice event) is wasted.

    Each maps to whether the event's whole upsert is subsumed: it carries nothing but the
    invoice (no failure, alert or settlement), and the event shown has at least its
    ``attempt_count`` and ``attempted``, so once both are applied the row is the same with
    or without it. Only the key's first parts, status rank, event time and attempt count,
    decide: the last one, the event id, PostgreSQL compares in the database's collation,
    which Python's string order need not match. A batch redone event by event (after a
    failure) stores every object."""
    shown: dict[str, tuple[_ShownKey, MirroredInvoice]] = {}
    keys: list[_ShownKey | None] = []
    for plan, new in zip(plans, fresh, strict=True):
        invoice = plan.invoice if new and plan.outcome == "applied" else None
        if invoice is None:
            keys.append(None)
            continue
        key = (INVOICE_STATUS_RANK[invoice.status], plan.created, invoice.attempt_count)
        keys.append(key)
        if invoice.id not in shown or key > shown[invoice.id][0]:
            shown[invoice.id] = (key, invoice)
    superseded: dict[int, bool] = {}
    for n, (plan, observed) in enumerate(zip(plans, keys, strict=True)):
        if observed is None or plan.invoice is None:
            continue
        top_key, top = shown[plan.invoice.id]
        if observed < top_key:
            superseded[n] = (
                plan.failure is None
                and plan.alert is None
                and plan.resolve is None
                and top.attempt_count >= plan.invoice.attempt_count
                and (top.attempted or not plan.invoice.attempted)
            )
    return superseded


@dataclass
class _KnownInvoices:
    """What a store with a single writer (``_single_writer``) knows of the invoices a batch
    settles, so that a settling event leaves out the statements certain to change nothing:
    relabelling for an invoice no event has settled yet, and resolving alerts and
    canceling steps for one that has neither. Read once per batch, then kept up to date as
    the batch's events are sent; on such a store nothing else writes meanwhile."""

    #: Invoices that may carry a settlement (``settled_at``).
    settled: set[str]
    #: Invoices that may have alerts or dunning steps.
    followed: set[str]


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
    #: Alerts opened already resolved: a failure of an invoice settled before it arrived.
    opened_resolved: list[int] = field(default_factory=list)
    scheduled: Cursor | None = None
    resolved: Cursor | None = None
    canceled: list[Cursor] = field(default_factory=list)


# The earliest failure is kept (dunning counts from it). The last failure's code and message
# are those of the failure with the largest (attempt_count, created, event id), whatever
# the order of delivery (domain.merge.failure_key).
_FAILURE_COLUMNS = (
    "last_failure_code",
    "last_failure_message",
    "last_failure_attempt",
    "last_failure_at",
    "last_failure_event_id",
)
_LATER_FAILURE = (
    "(last_failure_at IS NULL OR "
    "(?, ?, ?) > (last_failure_attempt, last_failure_at, last_failure_event_id))"
)
RECORD_FAILURE = (
    "UPDATE billing_invoices SET "
    "first_failed_at = CASE WHEN first_failed_at IS NULL OR first_failed_at > ? THEN ? "
    "ELSE first_failed_at END, "
    + ", ".join(
        f"{column} = CASE WHEN {_LATER_FAILURE} THEN ? ELSE {column} END"
        for column in _FAILURE_COLUMNS
    )
    + " WHERE id = ? RETURNING status, first_failed_at, settled_resolution"
)
_SETTLED_RESOLUTION = "(SELECT settled_resolution FROM billing_invoices WHERE id = ?)"
# An earlier settling event, delivered later, takes the credit for what the later one
# settled first: the alerts it resolved and the steps it canceled say its resolution. Run
# before the invoice's upsert, against the settlement the row had.
_LATER_SETTLED = (
    "(SELECT settled_resolution FROM billing_invoices WHERE id = ? "
    "AND (settled_at, settled_event_id) > (?, ?))"
)
LOCK_INVOICE = "UPDATE billing_invoices SET settled_at = settled_at WHERE id = ?"
RELABEL_RESOLVED_ALERTS = (
    "UPDATE billing_alerts SET resolution = ?, updated_at = ? "
    f"WHERE invoice_id = ? AND status = 'resolved' AND resolution = {_LATER_SETTLED}"
)
# ``status || ''`` is a term no index serves, so that SQLite (which has no statistics to go
# by) finds the steps by the invoice's key instead of walking every canceled step of every
# invoice in the status index, a cost that grew with the table. The idiom of SQLite's
# unary "+" (https://sqlite.org/optoverview.html, "Disqualifying WHERE clause terms"), in
# a form PostgreSQL also reads.
RELABEL_CANCELED_STEPS = (
    "UPDATE billing_dunning_events SET reason = ?, updated_at = ? "
    f"WHERE invoice_id = ? AND status || '' = 'canceled' AND reason = {_LATER_SETTLED}"
)
RESOLVE_SETTLED_ALERTS = (
    "UPDATE billing_alerts SET status = 'resolved', resolved_at = ?, "
    f"resolution = {_SETTLED_RESOLUTION}, updated_at = ? "
    "WHERE invoice_id = ? AND status <> 'resolved' RETURNING id"
)
CANCEL_SETTLED_STEPS = (
    "UPDATE billing_dunning_events SET status = 'canceled', "
    f"reason = {_SETTLED_RESOLUTION}, lease_expires_at = NULL, updated_at = ? "
    f"WHERE invoice_id = ? AND status IN ({', '.join('?' for _ in PENDING_STATUSES)}) "
    "RETURNING id"
)
# Moves steps not acted on yet (scheduled, or canceled by a settlement) earlier when an
# older failure, delivered late, moves the invoice's first failure earlier: the same due
# times as if events had come in order.
REPLAN_STEP = (
    "UPDATE billing_dunning_events SET due_at = ?, updated_at = ? "
    "WHERE invoice_id = ? AND day = ? AND channel = ? "
    "AND status IN ('scheduled', 'canceled') AND due_at > ?"
)


class MirrorSql(AuditSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    #: Whether no other writer can commit while a transaction of this store is open
    #: (SQLite's ``BEGIN IMMEDIATE``). Then an invoice event whose upsert another event of
    #: the batch subsumes is not sent at all: nothing reads the row between the two but the
    #: batch itself. On PostgreSQL the first upsert takes the row's lock, which a worker
    #: applying the same invoice's settlement meanwhile waits for (``LOCK_INVOICE``).
    _single_writer: bool = False

    if TYPE_CHECKING:
        # Provided by ``SqlStore`` (core), ``AlertsSql``, ``DunningSql`` and the dialects.
        def _insert_audit(self, entry: AuditDraft, now: datetime) -> int: ...

        def _raise_event_alert_in_tx(
            self, draft: AlertDraft, created: datetime, now: datetime, resolution: str | None
        ) -> tuple[int, bool]: ...

        def _send_steps(self, steps: Sequence[StepDraft], now: datetime) -> Cursor | None: ...

        def _send_canceled_steps(
            self, steps: Sequence[StepDraft], reason: str, now: datetime
        ) -> Cursor | None: ...

        def _quarantine_events_in_tx(
            self, rejected: Sequence[RejectedEvent], now: datetime
        ) -> list[EventResult]: ...

        def _settle_redelivered_in_tx(self, now: datetime) -> None: ...

    def _invoice_params(
        self,
        invoice: MirroredInvoice,
        observed_at: datetime,
        now: datetime,
        event_id: str = NO_EVENT,
        settled: tuple[str, str] | None = None,
    ) -> tuple[Any, ...]:
        """``UPSERT_INVOICE``'s parameters; ``settled``: the ``(invoice_id, resolution)`` an
        event settles the invoice with (``EventPlan.resolve``)."""
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
            invoice.attempt_count,
            event_id,
            None if settled is None else observed_at,
            None if settled is None else event_id,
            None if settled is None else settled[1],
            observed_at,
            now,
        )

    def _shown(
        self, row: Sequence[Any] | None, invoice: MirroredInvoice, observed_at: datetime
    ) -> bool:
        """Whether the row an upsert returned shows ``invoice`` (a listing's, no event)."""
        return row is not None and (
            row[0] == invoice.status
            and self._time(row[1]) == observed_at
            and int(row[2]) == invoice.attempt_count
            and row[3] == NO_EVENT
        )

    def upsert_invoice(
        self, invoice: MirroredInvoice, observed_at: datetime, now: datetime
    ) -> bool:
        with self._transaction():
            params = self._invoice_params(invoice, observed_at, now)
            row = self._execute(UPSERT_INVOICE, params).fetchone()
            return self._shown(row, invoice, observed_at)

    def upsert_invoices(
        self, invoices: Iterable[MirroredInvoice], observed_at: datetime, now: datetime
    ) -> int:
        changed = 0
        with self._transaction():
            for invoice in invoices:
                params = self._invoice_params(invoice, observed_at, now)
                row = self._execute(UPSERT_INVOICE, params).fetchone()
                changed += self._shown(row, invoice, observed_at)
        return changed

    def _subscription_params(
        self,
        subscription: MirroredSubscription,
        observed_at: datetime,
        now: datetime,
        event_id: str = NO_EVENT,
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
            event_id,
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
        self,
        customer: MirroredCustomer,
        observed_at: datetime,
        now: datetime,
        event_id: str = NO_EVENT,
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
            event_id,
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
                superseded = _superseded_invoices(plans, fresh)
                known = self._known_invoices(plans, fresh) if self._single_writer else None
                sent = [
                    None
                    if not new
                    else _SentEvent()
                    if superseded.get(n) and known is not None
                    else self._send_event_in_tx(
                        plan, planner, now, shown=n not in superseded, known=known
                    )
                    for n, (plan, new) in enumerate(zip(plans, fresh, strict=True))
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

    def _known_invoices(self, plans: Sequence[EventPlan], fresh: Sequence[bool]) -> _KnownInvoices:
        """``_KnownInvoices`` of the invoices the batch's new events settle: two reads."""
        settling = sorted(
            {
                plan.resolve[0]
                for plan, new in zip(plans, fresh, strict=True)
                if new and plan.resolve
            }
        )
        known = _KnownInvoices(settled=set(), followed=set())
        for part in chunked(settling, KNOWN_INVOICES_PER_READ):
            marks = ", ".join("?" for _ in part)
            known.settled.update(
                row[0]
                for row in self._execute(
                    f"SELECT id FROM billing_invoices WHERE id IN ({marks}) "
                    "AND settled_at IS NOT NULL",
                    part,
                ).fetchall()
            )
            known.followed.update(
                row[0]
                for row in self._execute(
                    f"SELECT invoice_id FROM billing_alerts WHERE invoice_id IN ({marks}) "
                    "UNION SELECT invoice_id FROM billing_dunning_events "
                    f"WHERE invoice_id IN ({marks})",
                    [*part, *part],
                ).fetchall()
            )
        return known

    def _send_event_in_tx(
        self,
        plan: EventPlan,
        planner: DunningPlanner,
        now: datetime,
        *,
        shown: bool = True,
        known: _KnownInvoices | None = None,
    ) -> _SentEvent:
        """The effects of an event just recorded as new, merged by ``domain.merge``'s rules
        so that the order of events does not matter. Only what decides the next step is
        read here; the rest is read by ``_finish_event_in_tx``.

        ``shown=False``: another event of the transaction shows the invoice instead
        (``_superseded_invoices``), so its object is not encoded to be stored. With ``known``
        (a store with a single writer), a settlement leaves out the statements that
        ``known`` shows cannot change anything."""
        work = _SentEvent()
        if plan.outcome == "skipped":
            return work
        observed, event_id = plan.created, plan.event_id
        if plan.customer is not None:
            params = self._customer_params(plan.customer, observed, now, event_id)
            self._execute(UPSERT_CUSTOMER, params)
        if plan.subscription is not None:
            subscription = self._with_known_discounts(plan.subscription)
            params = self._subscription_params(subscription, observed, now, event_id)
            self._execute(UPSERT_SUBSCRIPTION, params)
        invoice_status: str | None = None
        settled_by: str | None = None
        first_failed_at: datetime | None = None
        if plan.invoice is not None:
            invoice_id = plan.invoice.id
            if plan.resolve is not None and (known is None or invoice_id in known.settled):
                # The invoice's row lock first: a settlement another worker commits
                # meanwhile is then seen by the relabelling (PostgreSQL reads each
                # statement afresh; SQLite writes one transaction at a time).
                if known is None:
                    self._execute(LOCK_INVOICE, (invoice_id,))
                for relabel in (RELABEL_RESOLVED_ALERTS, RELABEL_CANCELED_STEPS):
                    self._execute(
                        relabel,
                        (plan.resolve[1], now, invoice_id, invoice_id, observed, event_id),
                    )
            if known is not None:
                if plan.resolve is not None:
                    known.settled.add(invoice_id)
                if plan.alert is not None:
                    known.followed.add(invoice_id)
            invoice = plan.invoice if shown else replace(plan.invoice, raw=_SUPERSEDED_RAW)
            params = self._invoice_params(invoice, observed, now, event_id, plan.resolve)
            self._execute(UPSERT_INVOICE, params)
            if plan.failure is not None:
                key = (plan.invoice.attempt_count, observed, event_id)
                values = (
                    plan.failure.code,
                    plan.failure.message,
                    plan.invoice.attempt_count,
                    observed,
                    event_id,
                )
                row = self._execute(
                    RECORD_FAILURE,
                    (
                        observed,
                        observed,
                        *(part for value in values for part in (*key, value)),
                        invoice_id,
                    ),
                ).fetchone()
                assert row is not None
                invoice_status, settled_by = row[0], row[2]
                first_failed_at = self._time(row[1])
            elif plan.alert is not None:
                current = self._execute(
                    "SELECT status, settled_resolution FROM billing_invoices WHERE id = ?",
                    (invoice_id,),
                ).fetchone()
                if current is not None:
                    invoice_status, settled_by = current[0], current[1]
        if plan.alert is not None:
            self._send_event_alert(
                plan, planner, now, work, invoice_status, settled_by, first_failed_at
            )
        if plan.resolve is not None and (known is None or plan.resolve[0] in known.followed):
            invoice_id = plan.resolve[0]
            work.resolved = self._answer_later(
                self._execute(RESOLVE_SETTLED_ALERTS, (now, invoice_id, now, invoice_id))
            )
            work.canceled.append(
                self._answer_later(
                    self._execute(
                        CANCEL_SETTLED_STEPS, (invoice_id, now, invoice_id, *PENDING_STATUSES)
                    )
                )
            )
        return work

    def _send_event_alert(
        self,
        plan: EventPlan,
        planner: DunningPlanner,
        now: datetime,
        work: _SentEvent,
        invoice_status: str | None,
        settled_by: str | None,
        first_failed_at: datetime | None,
    ) -> None:
        """Open or add to the event's alert, and for a failure its dunning steps. A failure
        of a settled invoice adds to the alert its settlement resolved, or opens one already
        resolved, with its steps canceled (``domain.merge``)."""
        assert plan.alert is not None
        settled = invoice_status in SETTLED_INVOICE_STATUSES
        if settled and settled_by is None:
            # Settled as far as a listing knows, by no event of ours: nothing to resolve
            # the alert with, and a settled invoice is never reopened.
            return
        resolution = settled_by if settled else None
        alert_id, is_new = self._raise_event_alert_in_tx(plan.alert, plan.created, now, resolution)
        if is_new:
            work.opened.append(alert_id)
            if resolution is not None:
                work.opened_resolved.append(alert_id)
        if plan.alert.type != "invoice_failed" or plan.invoice is None:
            return
        assert first_failed_at is not None
        steps = planner(
            invoice_id=plan.invoice.id,
            customer_id=plan.invoice.customer_id,
            alert_id=alert_id,
            first_failed_at=first_failed_at,
        )
        if is_new:
            if resolution is None:
                if (sent := self._send_steps(steps, now)) is not None:
                    work.scheduled = self._answer_later(sent)
            elif (sent := self._send_canceled_steps(steps, resolution, now)) is not None:
                work.canceled.append(self._answer_later(sent))
        elif first_failed_at == plan.created:
            self._replan_steps_in_tx(steps, now)

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
        resolved: list[int] = list(work.opened_resolved)
        if work.resolved is not None:
            resolved += sorted(int(row[0]) for row in work.resolved.fetchall())
        for alert_id in resolved:
            self._audit_alert(actor, "alert.resolve", alert_id, "resolved", plan, now)
        canceled = sum(len(cursor.fetchall()) for cursor in work.canceled)
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
