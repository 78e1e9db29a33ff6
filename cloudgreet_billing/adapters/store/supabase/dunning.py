"""The alerts and dunning areas of the Supabase store (AlertsOps, DunningOps), over the
functions of 0007_supabase_api.sql's section "alerts, dunning"."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase


class SupabaseDunning(SupabaseBase):
    pass
