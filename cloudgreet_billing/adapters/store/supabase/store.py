"""``SupabaseStore``: the store protocol through Supabase's REST API."""

from __future__ import annotations

from cloudgreet_billing.adapters.store.supabase.client import TIMEOUT_SECONDS, api_for
from cloudgreet_billing.adapters.store.supabase.dunning import SupabaseDunning
from cloudgreet_billing.adapters.store.supabase.finance import SupabaseFinance
from cloudgreet_billing.adapters.store.supabase.mirror import SupabaseMirror
from cloudgreet_billing.adapters.store.supabase.operations import SupabaseOperations
from cloudgreet_billing.adapters.store.supabase.recovery import SupabaseRecovery


class SupabaseStore(
    SupabaseMirror, SupabaseDunning, SupabaseFinance, SupabaseOperations, SupabaseRecovery
):
    """Every store operation as calls of the project's ``billing_api_*`` functions."""

    def __init__(self, url: str, key: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self._api = api_for(url, key, timeout=timeout)
        self.location = self._api.location
