"""The exemptions and recovery areas of the Supabase store (ExemptionsOps, RecoveryOps),
over the functions of 0007_supabase_api.sql's section "exemptions, recovery".

Exempting and unexempting are one call each, the change with its audit line, as
``sql_exemptions.py`` writes them; a repeated exempt keeps the first exemption. A run's
claim, confirmation and escalation read the exemptions in the dunning area's functions.

``failed_invoices`` reads the window a page at a time by invoice id, each page one call
that returns the page's invoices with their touches (``billing_api_failed_invoices``), so
memory stays flat however long the window, and the row cap (db-max-rows) never cuts a
page: the answer is one jsonb value, and the reading stops only at an empty page.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase, iso, utc, utc_time
from cloudgreet_billing.adapters.store.supabase.client import PAGE_SIZE

if TYPE_CHECKING:
    from cloudgreet_billing.domain.exemptions import Exemption, ExemptOutcome
    from cloudgreet_billing.domain.reconciliation import Window
    from cloudgreet_billing.domain.recovery import FailedInvoice, Touch


def _stripe_paid_at(value: Any) -> datetime | None:
    """Stripe's ``status_transitions.paid_at`` when it is a whole number of seconds, as
    ``sql_recovery._paid_at`` reads it from the invoice object."""
    from cloudgreet_billing.domain.timefmt import from_unix

    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return from_unix(value)


#: Customer ids per call of billing_api_list_exemptions, as sql_exemptions.ID_BATCH.
ID_BATCH = 500


def _exemption(row: Mapping[str, Any]) -> Exemption:
    from cloudgreet_billing.domain.exemptions import Exemption

    return Exemption(
        customer_id=row["customer_id"],
        reason=row["reason"],
        actor=row["actor"],
        created_at=utc(row["created_at"]),
    )


def _exemption_key(row: Mapping[str, Any]) -> dict[str, Any]:
    """The listing's page key: (created_at, customer_id)."""
    return {"created_at": row["created_at"], "customer_id": row["customer_id"]}


class SupabaseRecovery(SupabaseBase):
    #: Invoices per call of billing_api_failed_invoices.
    _recovery_page_size = PAGE_SIZE

    # --- dunning exemptions -----------------------------------------------------------
    def exempt_customer(
        self, customer_id: str, *, reason: str, actor: str, now: datetime
    ) -> ExemptOutcome:
        from cloudgreet_billing.domain.exemptions import ExemptOutcome

        outcome = self._api.rpc(
            "billing_api_exempt_customer",
            {"p_customer_id": customer_id, "p_reason": reason, "p_actor": actor, "p_now": iso(now)},
        )
        return ExemptOutcome(_exemption(outcome["exemption"]), created=bool(outcome["created"]))

    def unexempt_customer(self, customer_id: str, *, actor: str, now: datetime) -> Exemption | None:
        ended = self._api.rpc(
            "billing_api_unexempt_customer",
            {"p_customer_id": customer_id, "p_actor": actor, "p_now": iso(now)},
        )
        return None if ended is None else _exemption(ended)

    def get_exemption(self, customer_id: str) -> Exemption | None:
        found = self._api.rpc("billing_api_get_exemption", {"p_customer_id": customer_id})
        return None if found is None else _exemption(found)

    def list_exemptions(
        self, *, customer_ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[Exemption]:
        if customer_ids is None:
            return self._exemptions({"p_customer_ids": None}, limit)
        found: list[Exemption] = []
        # Batches keep each call's body and IN list small, as the SQL store's chunks do.
        unique = sorted(set(customer_ids))
        for start in range(0, len(unique), ID_BATCH):
            found.extend(self._exemptions({"p_customer_ids": unique[start : start + ID_BATCH]}))
        found.sort(key=lambda exemption: (exemption.created_at, exemption.customer_id))
        return found if limit is None else found[:limit]

    def _exemptions(self, args: Mapping[str, Any], limit: int | None = None) -> list[Exemption]:
        """Up to ``limit`` exemptions (all when None), page by key, oldest first."""
        found: list[Exemption] = []
        cursor: Any = None
        while limit is None or len(found) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(found))
            page = self._api.rpc(
                "billing_api_list_exemptions", {**args, "p_after": cursor, "p_limit": size}
            )
            if not page:
                break
            found.extend(_exemption(row) for row in page)
            cursor = _exemption_key(page[-1])
        return found

    def count_exemptions(self) -> int:
        return int(self._api.rpc("billing_api_count_exemptions"))

    # --- recovery ---------------------------------------------------------------------

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

        settled_at = utc_time(row["settled_at"])
        return FailedInvoice(
            id=row["id"],
            customer_id=row["customer_id"],
            currency=row["currency"],
            status=row["status"],
            amount_due=int(row["amount_due"]),
            amount_paid=int(row["amount_paid"]),
            first_failed_at=utc(row["first_failed_at"]),
            settled_at=settled_at,
            paid_at=settled_at
            if row["paid_when_settled"]
            else _stripe_paid_at(row["stripe_paid_at"]),
            exhausted_at=utc_time(row["exhausted_at"]),
            exempt_since=utc_time(row["exempt_since"]),
            decline_code=row["decline_code"],
            advice_code=row["advice_code"],
            touches=tuple(_touch(touch) for touch in row["touches"]),
        )


def _touch(row: Mapping[str, Any]) -> Touch:
    from cloudgreet_billing.domain.recovery import Touch

    return Touch(
        kind=row["kind"],
        at=utc(row["at"]),
        day=None if row["day"] is None else int(row["day"]),
        channel=row["channel"],
    )
