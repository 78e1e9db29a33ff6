"""Recovery figures: what dunning and the operators got back of the payments that failed.

``dunning report``, the dashboard's recovery line and ``export-csv --dataset recovery``
read them here, so the three always agree. The definitions are ``domain.recovery``'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.domain.reconciliation import Window
from cloudgreet_billing.domain.recovery import RecoveryReport, recovery_report
from cloudgreet_billing.domain.windows import RECOVERY_DAYS

__all__ = ["RECOVERY_DAYS", "build_recovery_report", "recovery_window"]


def recovery_window(now: datetime, days: int = RECOVERY_DAYS) -> Window:
    """The last ``days`` days up to ``now``: failures in it are the report's invoices."""
    return Window(start=now - timedelta(days=days), end=now)


def build_recovery_report(store: Store, window: Window) -> RecoveryReport:
    """The figures of the invoices whose first failure lies in ``window``."""
    return recovery_report(store.failed_invoices(window), window)
