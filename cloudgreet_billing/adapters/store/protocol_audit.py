"""Store operations: the audit log, which every area appends to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the audit log."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    idempotency_key: str | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An audit line to append."""

    actor: str
    action: str
    target: str
    outcome: str
    idempotency_key: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class AuditOps(Protocol):
    """Part of ``Store``; see ``protocol.py``."""

    def append_audit(self, entry: AuditDraft, now: datetime) -> int:
        """Append one audit line and return its id."""
        ...

    def audit_trail(self, target: str, limit: int = 100) -> list[AuditRecord]:
        """The audit lines about one target, oldest first."""
        ...

    def audit_between(
        self, since: datetime, until: datetime, limit: int | None = None
    ) -> list[AuditRecord]:
        """Every audit line with ``since <= occurred_at < until``, oldest first."""
        ...
