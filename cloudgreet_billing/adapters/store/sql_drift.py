"""The drift check's reads and repairs, shared by SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cloudgreet_billing.adapters.store.sql_mirror import (
    INVOICE_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    UPSERT_INVOICE,
    UPSERT_SUBSCRIPTION,
    MirrorSql,
)

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription


class DriftSql(MirrorSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    if TYPE_CHECKING:
        # Provided by ``AlertsSql``.
        def resolve_invoice_alerts(
            self, invoice_id: str, *, resolution: str, actor: str, now: datetime
        ) -> tuple[list[int], int]: ...

    def mirrored_invoices_created(
        self, since: datetime, until: datetime
    ) -> dict[str, MirroredInvoice]:
        rows = self._execute(
            f"SELECT {INVOICE_COLUMNS} FROM billing_invoices "
            "WHERE stripe_created >= ? AND stripe_created < ?",
            (since, until),
        ).fetchall()
        return {invoice.id: invoice for invoice in map(self._invoice, rows)}

    def mirrored_subscriptions(self) -> dict[str, MirroredSubscription]:
        rows = self._execute(f"SELECT {SUBSCRIPTION_COLUMNS} FROM billing_subscriptions").fetchall()
        return {subscription.id: subscription for subscription in map(self._subscription, rows)}

    def repair_invoice(
        self,
        invoice: MirroredInvoice,
        *,
        settle: str | None,
        audit: AuditDraft,
        now: datetime,
    ) -> MirroredInvoice | None:
        with self._transaction():
            self._execute(UPSERT_INVOICE, self._invoice_params(invoice, now, now)).fetchone()
            if settle is not None:
                self.resolve_invoice_alerts(
                    invoice.id, resolution=settle, actor=audit.actor, now=now
                )
            self._insert_audit(audit, now)
            return self.get_invoice(invoice.id)

    def repair_subscription(
        self, subscription: MirroredSubscription, *, audit: AuditDraft, now: datetime
    ) -> MirroredSubscription | None:
        with self._transaction():
            params = self._subscription_params(subscription, now, now)
            self._execute(UPSERT_SUBSCRIPTION, params).fetchone()
            self._insert_audit(audit, now)
            return self.get_subscription(subscription.id)
