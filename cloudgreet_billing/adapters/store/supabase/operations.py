"""The quarantine, drift and actions areas of the Supabase store (QuarantineOps, DriftOps,
ActionsOps), over the functions of 0007_supabase_api.sql's section "quarantine, drift,
actions"."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase


class SupabaseOperations(SupabaseBase):
    pass
