"""The mirror, quarantine and drift areas of the Supabase store (MirrorOps,
QuarantineOps, DriftOps), over the functions of 0007_supabase_api.sql's section
"mirror, quarantine, drift"."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase


class SupabaseMirror(SupabaseBase):
    pass
