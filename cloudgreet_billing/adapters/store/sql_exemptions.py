"""Dunning exemptions in ``billing_dunning_exemptions``: exempt, unexempt, read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.adapters.store.protocol_exemptions import EXEMPT, UNEXEMPT
from cloudgreet_billing.adapters.store.sql_audit import AuditSql
from cloudgreet_billing.adapters.store.sql_base import chunked
from cloudgreet_billing.domain.timefmt import iso_z

if TYPE_CHECKING:
    from cloudgreet_billing.domain.exemptions import Exemption, ExemptOutcome

EXEMPTION_SELECT = "SELECT customer_id, reason, actor, created_at FROM billing_dunning_exemptions"
ID_BATCH = 500
#: Tries of insert-or-read: a concurrent unexempt can delete the row an insert just met.
EXEMPT_TRIES = 3


class ExemptionsSql(AuditSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    def _exemption(self, row: Sequence[Any]) -> Exemption:
        from cloudgreet_billing.domain.exemptions import Exemption

        return Exemption(
            customer_id=row[0], reason=row[1], actor=row[2], created_at=self._time(row[3])
        )

    def exempt_customer(
        self, customer_id: str, *, reason: str, actor: str, now: datetime
    ) -> ExemptOutcome:
        from cloudgreet_billing.domain.exemptions import Exemption, ExemptOutcome

        with self._transaction():
            for _ in range(EXEMPT_TRIES):
                inserted = self._execute(
                    "INSERT INTO billing_dunning_exemptions (customer_id, reason, actor, "
                    "created_at) VALUES (?, ?, ?, ?) ON CONFLICT (customer_id) DO NOTHING "
                    "RETURNING customer_id",
                    (customer_id, reason, actor, now),
                ).fetchone()
                if inserted is not None:
                    self._insert_audit(
                        AuditDraft(
                            actor, EXEMPT, customer_id, "exempted", details={"reason": reason}
                        ),
                        now,
                    )
                    return ExemptOutcome(Exemption(customer_id, reason, actor, now), created=True)
                row = self._execute(
                    f"{EXEMPTION_SELECT} WHERE customer_id = ?", (customer_id,)
                ).fetchone()
                if row is not None:
                    kept = self._exemption(row)
                    self._insert_audit(
                        AuditDraft(
                            actor,
                            EXEMPT,
                            customer_id,
                            "already_exempt",
                            details={
                                "reason": reason,
                                "exempt_reason": kept.reason,
                                "exempted_by": kept.actor,
                                "exempted_at": iso_z(kept.created_at),
                            },
                        ),
                        now,
                    )
                    return ExemptOutcome(kept, created=False)
        raise RuntimeError(f"exempting {customer_id} raced an unexempt {EXEMPT_TRIES} times")

    def unexempt_customer(self, customer_id: str, *, actor: str, now: datetime) -> Exemption | None:
        with self._transaction():
            row = self._execute(
                "DELETE FROM billing_dunning_exemptions WHERE customer_id = ? "
                "RETURNING customer_id, reason, actor, created_at",
                (customer_id,),
            ).fetchone()
            ended = None if row is None else self._exemption(row)
            details: dict[str, Any] = {}
            if ended is not None:
                details = {
                    "exempt_reason": ended.reason,
                    "exempted_by": ended.actor,
                    "exempted_at": iso_z(ended.created_at),
                }
            outcome = "not_exempt" if ended is None else "unexempted"
            self._insert_audit(
                AuditDraft(actor, UNEXEMPT, customer_id, outcome, details=details), now
            )
        return ended

    def get_exemption(self, customer_id: str) -> Exemption | None:
        row = self._execute(f"{EXEMPTION_SELECT} WHERE customer_id = ?", (customer_id,)).fetchone()
        return None if row is None else self._exemption(row)

    def list_exemptions(
        self, *, customer_ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[Exemption]:
        order = " ORDER BY created_at, customer_id"
        if customer_ids is None:
            query, params = EXEMPTION_SELECT + order, []
            if limit is not None:
                query += " LIMIT ?"
                params.append(limit)
            return [self._exemption(row) for row in self._execute(query, params).fetchall()]
        found: list[Exemption] = []
        # Chunks keep each statement under SQLite's limit on bound parameters.
        for batch in chunked(sorted(set(customer_ids)), ID_BATCH):
            marks = ", ".join("?" for _ in batch)
            rows = self._execute(
                f"{EXEMPTION_SELECT} WHERE customer_id IN ({marks})", batch
            ).fetchall()
            found.extend(self._exemption(row) for row in rows)
        found.sort(key=lambda exemption: (exemption.created_at, exemption.customer_id))
        return found if limit is None else found[:limit]

    def _exemptions_in_tx(self, customer_ids: set[str]) -> dict[str, Exemption]:
        """The exemptions of these customers, by customer, inside the caller's transaction
        (a run's claim reads them beside the steps it claims)."""
        return {e.customer_id: e for e in self.list_exemptions(customer_ids=list(customer_ids))}

    def count_exemptions(self) -> int:
        row = self._execute("SELECT count(*) FROM billing_dunning_exemptions").fetchone()
        return int(row[0]) if row else 0
