"""The ledger, finance, audit and actions areas of the Supabase store (LedgerOps,
FinanceOps, AuditOps, ActionsOps), over the functions of 0007_supabase_api.sql's section
"ledger, finance, audit, actions"."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase


class SupabaseFinance(SupabaseBase):
    pass
