"""Store operations: dunning exemptions (``billing_dunning_exemptions``).

Exempting and unexempting each write their audit line in the same transaction as the
change, so the log never says a customer was exempted when they were not. Runs read the
exemptions inside their claim and confirmation (``DunningOps``): an exemption committed
before a step is confirmed stops its message, as a payment does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudgreet_billing.domain.exemptions import Exemption, ExemptOutcome

#: The audit log's actions for exempting and unexempting (target: the customer id).
EXEMPT = "dunning.exempt"
UNEXEMPT = "dunning.unexempt"


class ExemptionsOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    def exempt_customer(
        self, customer_id: str, *, reason: str, actor: str, now: datetime
    ) -> ExemptOutcome:
        """Exempt the customer from dunning, audited as ``dunning.exempt`` (``exempted``)
        in the same transaction. A customer already exempt keeps the first reason, actor
        and time; that is audited as ``already_exempt`` with the reason given."""
        ...

    def unexempt_customer(self, customer_id: str, *, actor: str, now: datetime) -> Exemption | None:
        """End the customer's exemption, audited as ``dunning.unexempt`` (``unexempted``,
        with the exemption ended) in the same transaction; returns it. A customer who is
        not exempt is audited as ``not_exempt`` and gets None."""
        ...

    def get_exemption(self, customer_id: str) -> Exemption | None: ...

    def list_exemptions(
        self, *, customer_ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[Exemption]:
        """Exemptions in force, oldest first (all, or those of ``customer_ids``)."""
        ...

    def count_exemptions(self) -> int:
        """How many customers are exempt now."""
        ...
