"""The exemptions and recovery areas of the Supabase store (ExemptionsOps, RecoveryOps),
over the functions of 0007_supabase_api.sql's section "exemptions, recovery"."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase


class SupabaseRecovery(SupabaseBase):
    pass
