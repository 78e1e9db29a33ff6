"""The exemptions and recovery areas of the Supabase store (ExemptionsOps, RecoveryOps),
over the functions of 0007_supabase_api.sql's section "exemptions, recovery".

``failed_invoices`` reads the window a page at a time by invoice id, each page one call
that returns the page's invoices with their touches (``billing_api_failed_invoices``), so
memory stays flat however long the window, and the row cap (db-max-rows) never cuts a
page: the answer is one jsonb value, and the reading stops only at an empty page.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase, iso
from cloudgreet_billing.adapters.store.supabase.client import PAGE_SIZE

if TYPE_CHECKING:
    from cloudgreet_billing.domain.reconciliation import Window
    from cloudgreet_billing.domain.recovery import FailedInvoice, Touch


def _utc(value: str | None) -> datetime | None:
    """A time of the functions' JSON in UTC: to_jsonb writes the session's time zone."""
    return None if value is None else _moment(value)


def _moment(value: str) -> datetime:
    """A time the function always gives (a NOT NULL column, or one its query requires)."""
    return datetime.fromisoformat(value).astimezone(UTC)


def _stripe_paid_at(value: Any) -> datetime | None:
    """Stripe's ``status_transitions.paid_at`` when it is a whole number of seconds, as
    ``sql_recovery._paid_at`` reads it from the invoice object."""
    from cloudgreet_billing.domain.timefmt import from_unix

    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return from_unix(value)


class SupabaseRecovery(SupabaseBase):
    #: Invoices per call of billing_api_failed_invoices (tests make it small).
    _recovery_page_size = PAGE_SIZE

    def failed_invoices(self, window: Window) -> Iterator[FailedInvoice]:
        rows = self._api.pages(
            "billing_api_failed_invoices",
            {"p_start": iso(window.start), "p_end": iso(window.end)},
            after=lambda row: row["id"],
            page_size=self._recovery_page_size,
        )
        for row in rows:
            yield self._failed_invoice(row)

    @staticmethod
    def _failed_invoice(row: Mapping[str, Any]) -> FailedInvoice:
        from cloudgreet_billing.domain.recovery import FailedInvoice

        settled_at = _utc(row["settled_at"])
        return FailedInvoice(
            id=row["id"],
            customer_id=row["customer_id"],
            currency=row["currency"],
            status=row["status"],
            amount_due=int(row["amount_due"]),
            amount_paid=int(row["amount_paid"]),
            first_failed_at=_moment(row["first_failed_at"]),
            settled_at=settled_at,
            paid_at=settled_at
            if row["paid_when_settled"]
            else _stripe_paid_at(row["stripe_paid_at"]),
            exhausted_at=_utc(row["exhausted_at"]),
            exempt_since=_utc(row["exempt_since"]),
            decline_code=row["decline_code"],
            advice_code=row["advice_code"],
            touches=tuple(_touch(touch) for touch in row["touches"]),
        )


def _touch(row: Mapping[str, Any]) -> Touch:
    from cloudgreet_billing.domain.recovery import Touch

    return Touch(
        kind=row["kind"],
        at=_moment(row["at"]),
        day=None if row["day"] is None else int(row["day"]),
        channel=row["channel"],
    )
