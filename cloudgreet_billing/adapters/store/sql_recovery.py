"""The recovery figures' reads, shared by SQLite and PostgreSQL.

The window's failed invoices are read a page at a time by key (``id > last id``, never an
offset, as the Supabase API functions of schema 7 page), each with its settlement,
escalation and exemption, and then that page's touches (by id, from the indexes on
``billing_dunning_events`` and ``billing_audit_log``), so memory stays flat however long
the window. The figures themselves are ``domain.recovery``'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cloudgreet_billing.adapters.store.sql_finance import IDS_PER_QUERY, FinanceSql
from cloudgreet_billing.domain.merge import SETTLEMENT_RESOLUTIONS

if TYPE_CHECKING:
    from cloudgreet_billing.domain.reconciliation import Window
    from cloudgreet_billing.domain.recovery import FailedInvoice, Touch

#: A settling event's resolution starts with this when it was a payment.
_PAID_RESOLUTION: Final = SETTLEMENT_RESOLUTIONS["paid"] + " (%"
# raw is read only where the payment time must come from Stripe's object: a paid invoice
# whose settling event (if any) was not the payment.
_FAILED_INVOICES: Final = (
    "SELECT i.id, i.customer_id, i.currency, i.status, i.amount_due, i.amount_paid, "
    "i.first_failed_at, i.settled_at, "
    "CASE WHEN i.status = 'paid' AND i.settled_resolution LIKE ? THEN 1 ELSE 0 END, "
    "CASE WHEN i.status = 'paid' AND (i.settled_resolution IS NULL "
    "OR i.settled_resolution NOT LIKE ?) THEN i.raw END, "
    "(SELECT min(a.created_at) FROM billing_alerts a "
    "WHERE a.type = 'dunning_exhausted' AND a.invoice_id = i.id), "
    "e.created_at, i.last_decline_code, i.last_advice_code "
    "FROM billing_invoices i "
    "LEFT JOIN billing_dunning_exemptions e ON e.customer_id = i.customer_id "
    "WHERE i.first_failed_at >= ? AND i.first_failed_at < ? AND i.id > ? "
    "ORDER BY i.id LIMIT ?"
)
# The touches: steps sent (a ``mark-sent`` step too: someone sent it by hand), links
# resent by ``resend-link``, and a ``retry`` that paid (audited on the invoice's id).
_TOUCHES: Final = (
    "SELECT invoice_id, 'step', day, channel, sent_at FROM billing_dunning_events "
    "WHERE status = 'sent' AND sent_at IS NOT NULL AND invoice_id IN ({ids}) "
    "UNION ALL "
    "SELECT target, CASE WHEN action = 'retry' THEN 'manual_retry' ELSE 'pay_link' END, "
    "NULL, NULL, occurred_at FROM billing_audit_log "
    "WHERE ((action = 'retry' AND outcome = 'paid') "
    "OR (action = 'resend-link' AND outcome = 'sent')) AND target IN ({ids})"
)


class RecoverySql(FinanceSql):
    """SQL for this area, shared by SQLite and PostgreSQL."""

    def failed_invoices(self, window: Window) -> Iterator[FailedInvoice]:
        after = ""  # every invoice id sorts after the empty string
        while True:
            page = self._execute(
                _FAILED_INVOICES,
                (
                    _PAID_RESOLUTION,
                    _PAID_RESOLUTION,
                    window.start,
                    window.end,
                    after,
                    IDS_PER_QUERY,
                ),
            ).fetchall()
            if not page:
                return
            yield from self._failed_page(page)
            if len(page) < IDS_PER_QUERY:
                return
            after = page[-1][0]

    def _failed_page(self, page: Sequence[Sequence[Any]]) -> list[FailedInvoice]:
        from cloudgreet_billing.domain.recovery import FailedInvoice

        touches = self._touches([row[0] for row in page])
        invoices = []
        for row in page:
            settled_at = self._optional_time(row[7])
            if row[8]:
                paid_at = settled_at
            else:
                paid_at = None if row[9] is None else _paid_at(self._json_value(row[9]))
            invoices.append(
                FailedInvoice(
                    id=row[0],
                    customer_id=row[1],
                    currency=row[2],
                    status=row[3],
                    amount_due=int(row[4]),
                    amount_paid=int(row[5]),
                    first_failed_at=self._time(row[6]),
                    settled_at=settled_at,
                    paid_at=paid_at,
                    exhausted_at=self._optional_time(row[10]),
                    exempt_since=self._optional_time(row[11]),
                    decline_code=row[12],
                    advice_code=row[13],
                    touches=tuple(touches.get(row[0], ())),
                )
            )
        return invoices

    def _touches(self, invoice_ids: Sequence[str]) -> dict[str, list[Touch]]:
        from cloudgreet_billing.domain.recovery import Touch

        marks = ", ".join("?" for _ in invoice_ids)
        rows = self._execute(_TOUCHES.format(ids=marks), (*invoice_ids, *invoice_ids)).fetchall()
        touches: dict[str, list[Touch]] = {}
        for invoice_id, kind, day, channel, at in rows:
            touches.setdefault(invoice_id, []).append(
                Touch(
                    kind=kind,
                    at=self._time(at),
                    day=None if day is None else int(day),
                    channel=channel,
                )
            )
        return touches


def _paid_at(raw: Any) -> datetime | None:
    """Stripe's ``status_transitions.paid_at`` of an invoice object, when it holds one."""
    from cloudgreet_billing.domain.timefmt import from_unix

    transitions = raw.get("status_transitions") if isinstance(raw, dict) else None
    paid_at = transitions.get("paid_at") if isinstance(transitions, dict) else None
    if isinstance(paid_at, bool) or not isinstance(paid_at, int):
        return None
    return from_unix(paid_at)
