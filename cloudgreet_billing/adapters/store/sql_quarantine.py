"""Quarantined Stripe events: kept beside their batch, listed, retried, dismissed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.sql_mirror import MirrorSql, failure_reason

if TYPE_CHECKING:
    from cloudgreet_billing.domain.dunning import DunningPlanner
    from cloudgreet_billing.domain.events import EventPlan, EventResult
    from cloudgreet_billing.domain.quarantine import QuarantinedEvent, RejectedEvent

QUARANTINE_COLUMNS = (
    "id, event_id, type, stripe_created, livemode, source, reason, payload, status, "
    "times_seen, first_seen_at, last_seen_at, resolved_at, resolved_by, resolution"
)
# A redelivery of a quarantined event updates its row: seen once more, with the reason the
# code of the day gives. A dismissed row keeps its status and reason (the operator decided).
QUARANTINE_EVENT = (
    "INSERT INTO billing_quarantined_events (dedupe_key, event_id, type, stripe_created, "
    "livemode, source, reason, payload, first_seen_at, last_seen_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (dedupe_key) DO UPDATE SET "
    "times_seen = billing_quarantined_events.times_seen + 1, "
    "last_seen_at = excluded.last_seen_at, "
    "reason = CASE WHEN billing_quarantined_events.status = 'quarantined' "
    "THEN excluded.reason ELSE billing_quarantined_events.reason END "
    "RETURNING id, status"
)
# Events applied since they were quarantined (a fixed delivery from another source) leave
# quarantine. Only waiting rows are scanned (a partial index), each probing a primary key.
SETTLE_REDELIVERED = (
    "UPDATE billing_quarantined_events SET status = 'applied', resolved_at = ?, "
    "resolved_by = 'stripe', resolution = 'applied when delivered again' "
    "WHERE status = 'quarantined' AND EXISTS (SELECT 1 FROM billing_stripe_events "
    "WHERE billing_stripe_events.id = billing_quarantined_events.event_id)"
)


class QuarantineSql(MirrorSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    def _quarantine_events_in_tx(
        self, rejected: Sequence[RejectedEvent], now: datetime
    ) -> list[EventResult]:
        """Keep each rejected event in quarantine, inside the batch's transaction; an event
        processed already (an earlier, good delivery) is a duplicate, not quarantined."""
        from cloudgreet_billing.domain.events import EventResult

        results: list[EventResult] = []
        for event in rejected:
            if event.event_id is not None and self.event_processed(event.event_id):
                results.append(EventResult(event.event_id, "duplicate", event.created))
                continue
            row = self._execute(
                QUARANTINE_EVENT,
                (
                    event.dedupe_key,
                    event.event_id,
                    event.type,
                    event.created,
                    event.livemode,
                    event.source,
                    event.reason,
                    event.payload,
                    now,
                    now,
                ),
            ).fetchone()
            assert row is not None
            quarantine_id, status = int(row[0]), row[1]
            results.append(
                EventResult(
                    event.event_id,
                    "quarantined" if status == "quarantined" else "duplicate",
                    event.created,
                    error=event.reason,
                    quarantine_id=quarantine_id,
                )
            )
        return results

    def _settle_redelivered_in_tx(self, now: datetime) -> None:
        self._execute(SETTLE_REDELIVERED, (now,))

    def _quarantined(self, row: Sequence[Any]) -> QuarantinedEvent:
        from cloudgreet_billing.domain.quarantine import QuarantinedEvent

        return QuarantinedEvent(
            id=int(row[0]),
            event_id=row[1],
            type=row[2],
            stripe_created=self._optional_time(row[3]),
            livemode=bool(row[4]),
            source=row[5],
            reason=row[6],
            payload=row[7],
            status=row[8],
            times_seen=int(row[9]),
            first_seen_at=self._time(row[10]),
            last_seen_at=self._time(row[11]),
            resolved_at=self._optional_time(row[12]),
            resolved_by=row[13],
            resolution=row[14],
        )

    def list_quarantined(
        self,
        *,
        statuses: Sequence[str] | None = ("quarantined",),
        limit: int | None = 50,
        after: int | None = None,
        event_id: str | None = None,
    ) -> list[QuarantinedEvent]:
        conditions: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            conditions.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params += statuses
        if after is not None:
            conditions.append("id > ?")
            params.append(after)
        if event_id is not None:
            conditions.append("event_id = ?")
            params.append(event_id)
        query = f"SELECT {QUARANTINE_COLUMNS} FROM billing_quarantined_events"
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        # Ids grow with each new row: id order is the order they were first quarantined.
        query += " ORDER BY id"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [self._quarantined(row) for row in self._execute(query, params).fetchall()]

    def get_quarantined(self, quarantine_id: int) -> QuarantinedEvent | None:
        row = self._execute(
            f"SELECT {QUARANTINE_COLUMNS} FROM billing_quarantined_events WHERE id = ?",
            (quarantine_id,),
        ).fetchone()
        return None if row is None else self._quarantined(row)

    def count_quarantined(self, statuses: Sequence[str] | None = ("quarantined",)) -> int:
        query = "SELECT count(*) FROM billing_quarantined_events"
        if statuses is not None:
            query += f" WHERE status IN ({', '.join('?' for _ in statuses)})"
        row = self._execute(query, list(statuses or ())).fetchone()
        return int(row[0]) if row else 0

    def _lock_quarantined_in_tx(self, quarantine_id: int) -> str:
        """The row's status, with its row lock held (a no-op update takes it on both
        engines), so two operators settle one row one after the other."""
        from cloudgreet_billing.errors import NotFound

        row = self._execute(
            "UPDATE billing_quarantined_events SET status = status WHERE id = ? RETURNING status",
            (quarantine_id,),
        ).fetchone()
        if row is None:
            raise NotFound(
                f"no quarantined event {quarantine_id}",
                hint="see: cloudgreet-billing quarantine list --status all",
            )
        return str(row[0])

    def retry_quarantined(
        self,
        quarantine_id: int,
        attempt: EventPlan | RejectedEvent,
        *,
        planner: DunningPlanner,
        now: datetime,
        actor: str,
    ) -> EventResult:
        from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
        from cloudgreet_billing.domain.events import EventPlan, EventResult

        with self._transaction():
            self._lock_quarantined_in_tx(quarantine_id)
            result: EventResult
            if isinstance(attempt, EventPlan):
                outcome = self._apply_in_savepoint(attempt, planner, now)
                if isinstance(outcome, BaseException):
                    reason = failure_reason(outcome)
                    result = EventResult(attempt.event_id, "quarantined", attempt.created, reason)
                else:
                    result = outcome
            else:
                result = EventResult(
                    attempt.event_id, "quarantined", attempt.created, attempt.reason
                )
            if result.status == "quarantined":
                self._execute(
                    "UPDATE billing_quarantined_events SET status = 'quarantined', reason = ?, "
                    "resolved_at = NULL, resolved_by = NULL, resolution = NULL WHERE id = ?",
                    (result.error, quarantine_id),
                )
            else:
                resolution = (
                    "already processed" if result.status == "duplicate" else "applied by retry"
                )
                self._execute(
                    "UPDATE billing_quarantined_events SET status = 'applied', resolved_at = ?, "
                    "resolved_by = ?, resolution = ? WHERE id = ?",
                    (now, actor, resolution, quarantine_id),
                )
            self._insert_audit(
                AuditDraft(
                    actor,
                    "quarantine.retry",
                    f"quarantine:{quarantine_id}",
                    result.status,
                    details={"event": result.event_id, "reason": result.error},
                ),
                now,
            )
        return replace(result, quarantine_id=quarantine_id)

    def dismiss_quarantined(
        self, quarantine_id: int, *, reason: str | None, actor: str, now: datetime
    ) -> QuarantinedEvent:
        from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
        from cloudgreet_billing.errors import BadInput

        with self._transaction():
            status = self._lock_quarantined_in_tx(quarantine_id)
            if status != "quarantined":
                raise BadInput(
                    f"quarantined event {quarantine_id} is already {status}",
                    hint="only an event still in quarantine can be dismissed",
                    code="already_settled",
                )
            resolution = reason or "dismissed"
            self._execute(
                "UPDATE billing_quarantined_events SET status = 'dismissed', resolved_at = ?, "
                "resolved_by = ?, resolution = ? WHERE id = ?",
                (now, actor, resolution, quarantine_id),
            )
            self._insert_audit(
                AuditDraft(
                    actor,
                    "quarantine.dismiss",
                    f"quarantine:{quarantine_id}",
                    "dismissed",
                    details={"reason": reason},
                ),
                now,
            )
        row = self.get_quarantined(quarantine_id)
        assert row is not None
        return row
