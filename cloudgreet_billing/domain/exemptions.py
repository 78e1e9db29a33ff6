"""Dunning exemptions: customers dunning must not remind (a payment plan, a VIP).

One row per customer while exempt (``billing_dunning_exemptions``), with who exempted them
and why; unexempting deletes it, and the audit log keeps the history. A run skips an exempt
customer's due steps with ``skip_reason``; steps not yet due stay scheduled, so they go out
as usual once the customer is unexempted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

#: How a step skipped for an exemption begins its reason (``dunning list`` shows it).
EXEMPT_REASON_PREFIX: Final = "customer exempt: "


@dataclass(frozen=True, slots=True)
class Exemption:
    """A row of ``billing_dunning_exemptions``: the first exemption stands until unexempt."""

    customer_id: str
    reason: str
    actor: str
    created_at: datetime

    @property
    def label(self) -> str:
        """The reason with who gave it, as steps and listings show it: ``payment plan (by
        alice)``."""
        return f"{self.reason} (by {self.actor})"

    @property
    def skip_reason(self) -> str:
        """Why a run skipped one of the customer's due steps."""
        return EXEMPT_REASON_PREFIX + self.label


@dataclass(frozen=True, slots=True)
class ExemptOutcome:
    """What exempting did: ``exemption`` is the one in force afterwards; ``created`` is
    False when the customer was already exempt (the first reason and actor are kept)."""

    exemption: Exemption
    created: bool
