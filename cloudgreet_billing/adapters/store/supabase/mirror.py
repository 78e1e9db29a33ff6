"""The mirror area of the Supabase store (MirrorOps), over the functions of
0007_supabase_api.sql's section "mirror".

Each operation is one function call, so one transaction: a batch of events is applied
with its processed markers, alerts, dunning steps, audit lines and quarantined events by
``billing_api_apply_event_plans`` (``sync``'s batches of 500 events are one request each);
a batch with a bad event quarantines that one inside the same call and applies the rest.
The functions port ``sql_mirror.py``'s statements, so both stores merge by the same rules
(``domain.merge``). A call may be repeated after a timeout: the events it recorded are
duplicates the second time, and listings merge to the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase, iso, utc_time
from cloudgreet_billing.adapters.store.supabase.event_plans import (
    customer_json,
    event_results,
    invoice_json,
    invoice_of,
    plan_json,
    rejected_json,
    subscription_json,
    subscription_of,
)

if TYPE_CHECKING:
    from cloudgreet_billing.domain.dunning import DunningPlanner
    from cloudgreet_billing.domain.events import EventPlan, EventResult
    from cloudgreet_billing.domain.mirror import (
        MirroredCustomer,
        MirroredInvoice,
        MirroredSubscription,
    )
    from cloudgreet_billing.domain.quarantine import RejectedEvent


class SupabaseMirror(SupabaseBase):
    # --- mirrored objects ---------------------------------------------------------
    def upsert_invoice(
        self, invoice: MirroredInvoice, observed_at: datetime, now: datetime
    ) -> bool:
        return self.upsert_invoices([invoice], observed_at, now) == 1

    def upsert_invoices(
        self, invoices: Iterable[MirroredInvoice], observed_at: datetime, now: datetime
    ) -> int:
        listed = [invoice_json(invoice) for invoice in invoices]
        if not listed:
            return 0
        changed = self._api.rpc(
            "billing_api_upsert_invoices",
            {"p_invoices": listed, "p_observed": iso(observed_at), "p_now": iso(now)},
        )
        return int(changed)

    def upsert_subscription(
        self, subscription: MirroredSubscription, observed_at: datetime, now: datetime
    ) -> bool:
        shown = self._api.rpc(
            "billing_api_upsert_subscription",
            {
                "p_subscription": subscription_json(subscription),
                "p_observed": iso(observed_at),
                "p_now": iso(now),
            },
        )
        return bool(shown)

    def upsert_customer(
        self, customer: MirroredCustomer, observed_at: datetime, now: datetime
    ) -> bool:
        shown = self._api.rpc(
            "billing_api_upsert_customer",
            {
                "p_customer": customer_json(customer),
                "p_observed": iso(observed_at),
                "p_now": iso(now),
            },
        )
        return bool(shown)

    def get_invoice(self, invoice_id: str) -> MirroredInvoice | None:
        row = self._api.rpc("billing_api_get_invoice", {"p_id": invoice_id})
        return None if row is None else invoice_of(row)

    def get_customer(self, customer_id: str) -> MirroredCustomer | None:
        from cloudgreet_billing.domain.mirror import MirroredCustomer

        row = self._api.rpc("billing_api_get_customer", {"p_id": customer_id})
        if row is None:
            return None
        return MirroredCustomer(
            id=row["id"],
            email=row["email"],
            name=row["name"],
            phone=row["phone"],
            currency=row["currency"],
            delinquent=bool(row["delinquent"]),
            deleted=bool(row["deleted"]),
            livemode=bool(row["livemode"]),
            raw=row["raw"],
            stripe_created=utc_time(row["stripe_created"]),
            default_payment_method=row.get("default_payment_method"),
        )

    def get_subscription(self, subscription_id: str) -> MirroredSubscription | None:
        row = self._api.rpc("billing_api_get_subscription", {"p_id": subscription_id})
        return None if row is None else subscription_of(row)

    # --- Stripe events ----------------------------------------------------------------
    def apply_event_plans(
        self,
        plans: Sequence[EventPlan],
        *,
        planner: DunningPlanner,
        now: datetime,
        rejected: Sequence[RejectedEvent] = (),
    ) -> list[EventResult]:
        if not plans and not rejected:
            return []
        answers = self._api.rpc(
            "billing_api_apply_event_plans",
            {
                "p_plans": [plan_json(plan, planner) for plan in plans],
                "p_rejected": [rejected_json(event) for event in rejected],
                "p_now": iso(now),
            },
        )
        return event_results(plans, answers)

    def event_processed(self, event_id: str) -> bool:
        return bool(self._api.rpc("billing_api_event_processed", {"p_event_id": event_id}))

    def last_event_processed_at(self) -> datetime | None:
        return utc_time(self._api.rpc("billing_api_last_event_processed_at"))
