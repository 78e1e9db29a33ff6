"""The ledger, finance and audit areas of the Supabase store (LedgerOps, FinanceOps,
AuditOps), over the functions of 0007_supabase_api.sql's section "ledger, finance,
audit"."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase


class SupabaseFinance(SupabaseBase):
    pass
