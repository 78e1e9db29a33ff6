"""The mirror area of the Supabase store (MirrorOps), over the functions of
0007_supabase_api.sql's section "mirror"."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase


class SupabaseMirror(SupabaseBase):
    pass
