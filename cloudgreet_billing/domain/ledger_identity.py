"""An ``external_id`` names one ledger entry, as a Stripe idempotency key names one request.

Repeating an entry under its ``external_id`` is safe: the repeat is skipped. Reusing the
id for an entry that differs in what it records (customer, kind, amount, currency, time
or invoice) is an error, never a silent skip: the second entry would be lost. The
description is free text about the entry, not part of what it records, so a repeat may
word it differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from cloudgreet_billing.domain.money import to_major_string
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.errors import BadInput

#: The columns two uses of one external_id must agree on, in the ledger's column order.
IDENTITY_COLUMNS = ("customer_id", "kind", "amount", "currency", "occurred_at", "invoice_id")
#: Conflicts an import lists one by one; past this only their count is kept.
MAX_LISTED_CONFLICTS = 20
CONFLICT_HINT = (
    "an external_id names one entry: repeat it only with the identical entry, "
    "or give a different entry its own external_id"
)


class EntryFacts(NamedTuple):
    """What an entry records: the part an ``external_id`` vouches for."""

    customer_id: str
    kind: str
    amount: int
    currency: str
    occurred_at: datetime
    invoice_id: str | None

    @classmethod
    def of(cls, entry: object) -> EntryFacts:
        """The facts of a draft or a recorded entry (anything with the ledger's fields)."""
        return cls(*(getattr(entry, column) for column in IDENTITY_COLUMNS))


@dataclass(frozen=True, slots=True)
class ExternalIdConflict:
    """One reuse of an ``external_id`` with other facts.

    ``given_row`` is the new entry's row in its import (1-based, in import order; None for
    a single ``ledger add``). The earlier version is either a recorded entry
    (``recorded_entry_id``) or an earlier row of the same import (``recorded_row``).
    """

    external_id: str
    recorded: EntryFacts
    given: EntryFacts
    given_row: int | None = None
    recorded_entry_id: int | None = None
    recorded_row: int | None = None


class ExternalIdConflicts(BadInput):
    """Entries that reuse an ``external_id`` with other facts: nothing was written.

    ``conflicts`` lists the first ``MAX_LISTED_CONFLICTS``; ``count`` is how many there are.
    """

    def __init__(self, conflicts: Sequence[ExternalIdConflict], count: int) -> None:
        self.conflicts = list(conflicts)
        self.count = count
        first = describe(self.conflicts[0]) if self.conflicts else "external_id reused"
        super().__init__(
            first,
            CONFLICT_HINT,
            code="external_id_conflict",
            conflicts=[as_json(conflict) for conflict in self.conflicts],
        )


def facts_json(facts: EntryFacts) -> dict[str, Any]:
    """The facts as the ledger's entry JSON has them (minor units, times ending in Z)."""
    return {**facts._asdict(), "occurred_at": iso_z(facts.occurred_at)}


def as_json(
    conflict: ExternalIdConflict, *, line_of: Mapping[int, int] | None = None
) -> dict[str, Any]:
    """A conflict for ``--json``: where each version comes from (an import's file
    ``line`` when ``line_of`` is given, else its ``row``; a recorded ``entry_id``) and
    its facts."""
    where = "line" if line_of is not None else "row"

    def place(row: int | None) -> int | None:
        if row is None or line_of is None:
            return row
        return line_of.get(row, row)

    recorded: dict[str, Any] = (
        {where: place(conflict.recorded_row)}
        if conflict.recorded_row is not None
        else {"entry_id": conflict.recorded_entry_id}
    )
    given_place = {} if conflict.given_row is None else {where: place(conflict.given_row)}
    return {
        "external_id": conflict.external_id,
        **given_place,
        "recorded": {**recorded, **facts_json(conflict.recorded)},
        "given": facts_json(conflict.given),
    }


def _shown(column: str, facts: EntryFacts) -> str:
    if column == "amount":
        return f"{to_major_string(facts.amount, facts.currency)} {facts.currency}"
    if column == "occurred_at":
        return iso_z(facts.occurred_at) or ""
    value = getattr(facts, column)
    return "none" if value is None else str(value)


def differences(recorded: EntryFacts, given: EntryFacts, *, was: str, now: str) -> str:
    """The facts that differ, each as ``column old (was) vs new (now)``; the amount and its
    currency are one fact."""
    parts = []
    for column in ("customer_id", "kind", "amount", "occurred_at", "invoice_id"):
        if column == "amount":
            same = (recorded.amount, recorded.currency) == (given.amount, given.currency)
        else:
            same = getattr(recorded, column) == getattr(given, column)
        if not same:
            name = column.removesuffix("_id") if column != "occurred_at" else column
            parts.append(
                f"{name} {_shown(column, recorded)} ({was}) vs {_shown(column, given)} ({now})"
            )
    return "; ".join(parts)


def describe(
    conflict: ExternalIdConflict,
    *,
    line_of: Mapping[int, int] | None = None,
) -> str:
    """One line naming the reused id, where each version comes from, and what differs.

    ``line_of`` maps an import's row numbers to the lines of its file; without it rows
    are named by number.
    """

    def place(row: int) -> str:
        if line_of is None:
            return f"row {row}"
        return f"line {line_of.get(row, row)}"

    now = "given" if conflict.given_row is None else place(conflict.given_row)
    if conflict.recorded_row is not None:
        was = place(conflict.recorded_row)
        what = f"external_id {conflict.external_id} is also on {was}"
    else:
        was = f"entry {conflict.recorded_entry_id}"
        what = f"external_id {conflict.external_id} already names {was}"
    head = f"{now}: " if conflict.given_row is not None else ""
    diff = differences(conflict.recorded, conflict.given, was=was, now=now)
    return f"{head}{what}, with other values: {diff}"


def first_conflict(
    recorded: object, recorded_entry_id: int, given: object, external_id: str
) -> ExternalIdConflict | None:
    """The conflict between a recorded entry and a new one under its id, or None if the
    new one repeats it."""
    was, now = EntryFacts.of(recorded), EntryFacts.of(given)
    if was == now:
        return None
    return ExternalIdConflict(
        external_id=external_id, recorded=was, given=now, recorded_entry_id=recorded_entry_id
    )
