"""Default look-back windows in days: one constant per question, so that every command
asking it (``reconcile`` and ``export-csv --dataset reconciliation``) gives one verdict.

Kept apart from the records so that ``--help`` can show the defaults cheaply.
"""

from __future__ import annotations

from typing import Final

#: ``reconcile`` and the reconciliation export.
RECONCILIATION_DAYS: Final = 30
#: The other exports (ledger, alerts, dunning): the weekly file for finance.
EXPORT_DAYS: Final = 7
#: ``dunning report``, the dashboard's recovery line and the recovery export.
RECOVERY_DAYS: Final = 30
