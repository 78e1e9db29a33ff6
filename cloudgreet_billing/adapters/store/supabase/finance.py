"""The ledger, finance and audit areas of the Supabase store (LedgerOps, FinanceOps,
AuditOps), over the functions of 0007_supabase_api.sql's section "ledger, finance,
audit".

- An import that fits in one request (``STAGE_ROWS`` rows) is one call. A larger one is
  staged under an import id, ``STAGE_ROWS`` rows per request, then committed by one call
  that judges every external_id and moves the rows in one transaction: the ledger gets
  the whole import or nothing. Every call is keyed (import id, row numbers), so a call
  whose answer was lost is sent again without writing twice; a commit whose answer was
  lost is looked up (``billing_api_ledger_import_state``) and waited for while it runs.
- Reads of any size go page by key (``SupabaseApi.pages``); the ledger export pages are
  bounded by the highest entry id when the export started, so it shows the ledger as it
  was then, however many pages it takes.
- Sums come back whole from one call: one snapshot, per currency, computed in SQL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, TypeVar

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft, AuditRecord
from cloudgreet_billing.adapters.store.protocol_ledger import ImportOutcome, LedgerQuery
from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase, iso, utc, utc_time
from cloudgreet_billing.adapters.store.supabase.client import PAGE_SIZE
from cloudgreet_billing.adapters.store.supabase.event_plans import subscription_of
from cloudgreet_billing.adapters.store.supabase.operations import audit_record_of
from cloudgreet_billing.domain.ledger import LedgerDraft, LedgerEntry
from cloudgreet_billing.domain.ledger_identity import (
    EntryFacts,
    ExternalIdConflict,
    ExternalIdConflicts,
    first_conflict,
)
from cloudgreet_billing.domain.money import THREE_DECIMAL, ZERO_DECIMAL
from cloudgreet_billing.domain.statuses import COUNTED_STATUSES, NOT_BILLED_STATUSES
from cloudgreet_billing.errors import StoreError, Unavailable

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_finance import (
        DunningWorkload,
        OpenAlert,
        PastDueInvoice,
    )
    from cloudgreet_billing.domain.ledger_batch import LedgerBatch
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription
    from cloudgreet_billing.domain.reconciliation import TotalsKey, Window

#: Ledger rows per staging request: about 0.7 MB of JSON, inserted in well under a second.
STAGE_ROWS: Final = 5_000
#: Tries of each staging call when its answer is lost or the API is busy.
IMPORT_ATTEMPTS: Final = 4
#: Seconds to wait before each retry.
RETRY_PAUSES: Final = (0.5, 2.0, 5.0)
#: Times a commit is sent when no commit holds the import after an unanswered one.
COMMIT_SENDS: Final = 2
#: Seconds between looks at a commit still running, and how many looks: its statement
#: timeout (10 minutes, set on the function) and a little more.
COMMIT_POLL_SECONDS: Final = 2.0
COMMIT_POLLS: Final = 330
#: Lines per ledger export page: one text, so larger pages than a list's cost nothing.
EXPORT_PAGE_ROWS: Final = 2_000
#: Invoice ids per call of ``ledger_sums_by_invoice``.
INVOICES_PER_CALL: Final = 1_000
#: Mirrored invoices per page: each carries Stripe's whole invoice (several kB).
INVOICE_PAGE_ROWS: Final = 100

_T = TypeVar("_T")


def _key(*columns: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """The paging key of a row: its values of ``columns``, as the function compares them."""
    return lambda row: {column: row[column] for column in columns}


def _entry(row: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        id=int(row["id"]),
        customer_id=row["customer_id"],
        kind=row["kind"],
        amount=int(row["amount"]),
        currency=row["currency"],
        occurred_at=utc(row["occurred_at"]),
        invoice_id=row["invoice_id"],
        description=row["description"],
        external_id=row["external_id"],
        created_at=utc(row["created_at"]),
    )


def _facts(values: Mapping[str, Any]) -> EntryFacts:
    return EntryFacts(
        values["customer_id"],
        values["kind"],
        int(values["amount"]),
        values["currency"],
        utc(values["occurred_at"]),
        values["invoice_id"],
    )


def _conflict(found: Mapping[str, Any]) -> ExternalIdConflict:
    recorded_row = found["recorded_row"]
    return ExternalIdConflict(
        external_id=found["external_id"],
        recorded=_facts(found["recorded"]),
        given=_facts(found["given"]),
        given_row=int(found["given_row"]),
        recorded_entry_id=None if recorded_row is not None else int(found["entry_id"]),
        recorded_row=None if recorded_row is None else int(recorded_row),
    )


def _staged_rows(batch: LedgerBatch) -> list[list[Any]]:
    """A batch as the staging function takes it: one array per row, in column order."""
    moments = {moment: moment.isoformat() for moment in set(batch.occurred_at)}
    return [
        [customer, kind, amount, currency, moments[moment], invoice, description, external]
        for customer, kind, amount, currency, moment, invoice, description, external in zip(
            *batch.columns(), strict=True
        )
    ]


def _window(window: Window) -> dict[str, Any]:
    return {"p_start": iso(window.start), "p_end": iso(window.end)}


class SupabaseFinance(SupabaseBase):
    """LedgerOps, FinanceOps and AuditOps as calls of the ``billing_api_*`` functions."""

    # --- ledger -----------------------------------------------------------------
    def record_ledger_entry(self, draft: LedgerDraft, now: datetime) -> tuple[LedgerEntry, bool]:
        found = self._api.rpc(
            "billing_api_record_ledger_entry",
            {
                "p_entry": {**draft._asdict(), "occurred_at": iso(draft.occurred_at)},
                "p_now": iso(now),
            },
        )
        entry = _entry(found["entry"])
        if found["created"]:
            return entry, True
        assert draft.external_id is not None, "ON CONFLICT skipped a row with no external_id"
        conflict = first_conflict(entry, entry.id, draft, draft.external_id)
        if conflict is not None:
            raise ExternalIdConflicts([conflict], 1)
        return entry, False

    def import_ledger(
        self,
        batches: Iterable[LedgerBatch],
        now: datetime,
        *,
        expected_rows: int | None = None,
        dry_run: bool = False,
    ) -> ImportOutcome:
        """Rows are held back until more than ``STAGE_ROWS`` have been read, so that an
        import that fits in one request is one call; ``expected_rows`` changes nothing."""
        import_id = str(uuid.uuid4())
        pending: list[list[Any]] = []
        staged = 0
        sent = False  # whether the server may hold a staging of this import
        try:
            for batch in batches:
                pending.extend(_staged_rows(batch))
                while len(pending) > STAGE_ROWS:
                    sent = True
                    self._stage(import_id, staged + 1, pending[:STAGE_ROWS])
                    staged += STAGE_ROWS
                    del pending[:STAGE_ROWS]
            sent = True
            if staged == 0:
                verdict = self._commit(
                    "billing_api_import_ledger",
                    {
                        "p_import_id": import_id,
                        "p_rows": pending,
                        "p_now": iso(now),
                        "p_dry_run": dry_run,
                    },
                )
            else:
                if pending:
                    self._stage(import_id, staged + 1, pending)
                    staged += len(pending)
                verdict = self._commit(
                    "billing_api_ledger_import_commit",
                    {
                        "p_import_id": import_id,
                        "p_rows": staged,
                        "p_now": iso(now),
                        "p_dry_run": dry_run,
                    },
                )
        except Exception:
            if sent:
                self._discard(import_id)
            raise
        if verdict["conflicts"]:
            raise ExternalIdConflicts(
                [_conflict(found) for found in verdict["conflicts"]],
                int(verdict["conflict_count"]),
            )
        return ImportOutcome(
            inserted=int(verdict["inserted"]), duplicates=int(verdict["duplicates"])
        )

    def _stage(self, import_id: str, first_seq: int, rows: Sequence[Sequence[Any]]) -> None:
        self._retried(
            lambda: self._api.rpc(
                "billing_api_ledger_import_stage",
                {"p_import_id": import_id, "p_first_seq": first_seq, "p_rows": rows},
            )
        )

    def _discard(self, import_id: str) -> None:
        """Drop a failed import's staging now; if even this fails, the next import cleans
        it up once it has been idle for an hour."""
        try:
            self._api.rpc("billing_api_ledger_import_discard", {"p_import_id": import_id})
        except Exception:  # the import's own error is the one to report
            return

    def _retried(self, call: Callable[[], _T]) -> _T:
        """``call`` again when the API did not answer or was busy: staging is idempotent
        (keyed by import id and row numbers), and postgrest-py never retries a POST."""
        for pause in RETRY_PAUSES[: IMPORT_ATTEMPTS - 1]:
            try:
                return call()
            except Unavailable:
                self._pause(pause)
        return call()

    def _commit(self, fn: str, args: Mapping[str, Any]) -> Any:
        """The verdict of the commit call ``fn``. When its answer does not come, the import's
        state says what happened: a verdict is taken as the answer; a commit still running
        (a long one outlives the client's timeout) is waited for; an import no commit
        holds (the request never ran, or rolled back) is sent once more. A repeated
        commit returns the first one's verdict, so nothing is recorded twice."""
        for _ in range(COMMIT_SENDS):
            try:
                return self._api.rpc(fn, args)
            except Unavailable:
                verdict = self._committed(str(args["p_import_id"]))
                if verdict is not None:
                    return verdict
        raise StoreError(
            f"Supabase ({self._api.location}) did not finish committing the ledger import; "
            "nothing was recorded",
            hint="retry; if it fails again, the file may be too large for one transaction "
            "through the REST API (see README, Supabase): split it, or import with "
            "BILLING_DATABASE_URL set",
        )

    def _committed(self, import_id: str) -> Any:
        """The import's verdict once a running commit has given it; None when no commit
        holds the import."""
        for _ in range(COMMIT_POLLS):
            try:
                state = self._retried(
                    lambda: self._api.rpc(
                        "billing_api_ledger_import_state", {"p_import_id": import_id}
                    )
                )
            except Unavailable:
                raise Unavailable(
                    f"Supabase ({self._api.location}) stopped answering while committing "
                    "the ledger import: it may or may not be recorded",
                    hint="once Supabase answers, check with ledger list; running the file "
                    "again skips the rows it recorded, by external_id",
                    code="store_unavailable",
                ) from None
            if state["result"] is not None:
                return state["result"]
            if not state["committing"]:
                return None
            self._pause(COMMIT_POLL_SECONDS)
        raise Unavailable(
            f"the ledger import's commit is still running in Supabase ({self._api.location}): "
            "it may or may not be recorded",
            hint="check the ledger in a few minutes (ledger list); running the file again "
            "skips the rows it committed, by external_id",
            code="store_unavailable",
        )

    def _pause(self, seconds: float) -> None:
        time.sleep(seconds)

    @staticmethod
    def _filters(query: LedgerQuery) -> dict[str, Any]:
        return {
            "p_customer_id": query.customer_id,
            "p_kind": query.kind,
            "p_since": iso(query.since),
            "p_until": iso(query.until),
        }

    def list_ledger(self, query: LedgerQuery) -> list[LedgerEntry]:
        if query.limit <= 0:
            return []
        rows = self._api.pages(
            "billing_api_list_ledger",
            self._filters(query),
            after=_key("occurred_at", "id"),
            page_size=min(PAGE_SIZE, query.limit),
        )
        return [_entry(row) for row in islice(rows, query.limit)]

    def count_ledger(self, query: LedgerQuery) -> int:
        return int(self._api.rpc("billing_api_count_ledger", self._filters(query)))

    # --- finance: reconciliation ------------------------------------------------------
    def ledger_window_totals(
        self, window: Window, customer_id: str | None = None
    ) -> dict[TotalsKey, int]:
        rows = self._api.rpc(
            "billing_api_ledger_window_totals", {**_window(window), "p_customer_id": customer_id}
        )
        return {(customer, currency): int(total) for customer, currency, total in rows}

    def mirror_invoice_totals(
        self, window: Window, customer_id: str | None = None
    ) -> dict[TotalsKey, int]:
        rows = self._api.rpc(
            "billing_api_mirror_invoice_totals",
            {
                **_window(window),
                "p_customer_id": customer_id,
                "p_not_billed": sorted(NOT_BILLED_STATUSES),
            },
        )
        return {(customer, currency): int(total) for customer, currency, total in rows}

    def mirror_invoice_count(self, window: Window, customer_id: str | None = None) -> int:
        return int(
            self._api.rpc(
                "billing_api_mirror_invoice_count",
                {
                    **_window(window),
                    "p_customer_id": customer_id,
                    "p_not_billed": sorted(NOT_BILLED_STATUSES),
                },
            )
        )

    def mirror_invoices(self, window: Window, customer_id: str) -> list[MirroredInvoice]:
        from cloudgreet_billing.domain.mirror import parse_invoice

        rows = self._api.pages(
            "billing_api_mirror_invoices",
            {**_window(window), "p_customer_id": customer_id},
            after=_key("stripe_created", "id"),
            page_size=INVOICE_PAGE_ROWS,
        )
        # The status column is the mirror's verdict (settled invoices never reopen).
        return [parse_invoice({**row["raw"], "status": row["status"]}) for row in rows]

    def ledger_entries(self, window: Window, customer_id: str) -> list[LedgerEntry]:
        rows = self._api.pages(
            "billing_api_ledger_entries",
            {**_window(window), "p_customer_id": customer_id},
            after=_key("occurred_at", "id"),
        )
        return [_entry(row) for row in rows]

    def ledger_sums_by_invoice(self, invoice_ids: Sequence[str]) -> dict[tuple[str, str], int]:
        wanted = sorted(set(invoice_ids))
        sums: dict[tuple[str, str], int] = {}
        for start in range(0, len(wanted), INVOICES_PER_CALL):
            rows = self._api.rpc(
                "billing_api_ledger_sums_by_invoice",
                {"p_invoice_ids": wanted[start : start + INVOICES_PER_CALL]},
            )
            sums.update({(invoice, currency): int(total) for invoice, currency, total in rows})
        return sums

    def past_due_invoices(self, now: datetime) -> list[PastDueInvoice]:
        from cloudgreet_billing.adapters.store.protocol_finance import PastDueInvoice

        return [
            PastDueInvoice(
                id=row["id"],
                customer_id=row["customer_id"],
                number=row["number"],
                currency=row["currency"],
                amount_due=int(row["amount_due"]),
                amount_remaining=int(row["amount_remaining"]),
                due_date=utc_time(row["due_date"]),
                attempt_count=int(row["attempt_count"]),
                first_failed_at=utc_time(row["first_failed_at"]),
                hosted_invoice_url=row["hosted_invoice_url"],
            )
            for row in self._api.pages(
                "billing_api_past_due_invoices", {"p_now": iso(now)}, after=_key("sort_at", "id")
            )
        ]

    def open_alerts(self) -> list[OpenAlert]:
        from cloudgreet_billing.adapters.store.protocol_finance import OpenAlert

        return [
            OpenAlert(
                id=int(row["id"]),
                type=row["type"],
                status=row["status"],
                customer_id=row["customer_id"],
                invoice_id=row["invoice_id"],
                amount_due=None if row["amount_due"] is None else int(row["amount_due"]),
                currency=row["currency"],
                created_at=utc(row["created_at"]),
            )
            for row in self._api.pages(
                "billing_api_open_alerts", {}, after=_key("created_at", "id")
            )
        ]

    # --- finance: dashboard -----------------------------------------------------------
    def ledger_kind_totals(self, window: Window, kind: str) -> dict[str, int]:
        rows = self._api.rpc("billing_api_ledger_kind_totals", {**_window(window), "p_kind": kind})
        return {currency: int(total) for currency, total in rows}

    def open_alert_counts(self) -> dict[str, int]:
        counts = self._api.rpc("billing_api_open_alert_counts")
        return {alert_type: int(counts[alert_type]) for alert_type in sorted(counts)}

    def past_due_totals(self, now: datetime) -> tuple[int, dict[str, int]]:
        rows = self._api.rpc("billing_api_past_due_totals", {"p_now": iso(now)})
        return (
            sum(int(count) for _, count, _ in rows),
            {currency: int(total) for currency, _, total in rows},
        )

    def dunning_workload(self, due_before: datetime) -> DunningWorkload:
        from cloudgreet_billing.adapters.store.protocol_finance import DunningWorkload

        found = self._api.rpc("billing_api_dunning_workload", {"p_due_before": iso(due_before)})
        return DunningWorkload(due=int(found["due"]), needs_review=int(found["needs_review"]))

    def recurring_subscriptions(self) -> Iterator[MirroredSubscription]:

        for row in self._api.pages(
            "billing_api_recurring_subscriptions",
            {"p_statuses": sorted(COUNTED_STATUSES)},
            after=lambda row: row["id"],
        ):
            yield subscription_of(row)

    # --- exports ------------------------------------------------------------------------
    def stream_ledger(self, window: Window) -> Iterator[LedgerEntry]:
        bound: int | None = None
        after: dict[str, Any] | None = None
        while True:
            page = self._api.rpc(
                "billing_api_stream_ledger",
                {**_window(window), "p_bound": bound, "p_after": after, "p_limit": PAGE_SIZE},
            )
            bound = int(page["bound"])
            rows = page["rows"]
            if not rows:
                return
            yield from map(_entry, rows)
            after = _key("occurred_at", "customer_id", "currency", "amount", "kind", "id")(rows[-1])

    def ledger_csv_chunks(self, window: Window) -> Iterator[tuple[str, int]]:
        """The lines are built by the database (``billing_api_ledger_csv_page``), one page
        of ``EXPORT_PAGE_ROWS`` per request and per chunk."""
        bound: int | None = None
        after: Any = None
        zero, three = sorted(ZERO_DECIMAL), sorted(THREE_DECIMAL)
        while True:
            page = self._api.rpc(
                "billing_api_ledger_csv_page",
                {
                    **_window(window),
                    "p_bound": bound,
                    "p_after": after,
                    "p_limit": EXPORT_PAGE_ROWS,
                    "p_zero": zero,
                    "p_three": three,
                },
            )
            bound = int(page["bound"])
            if not page["rows"]:
                return
            yield page["lines"], int(page["rows"])
            after = page["after"]

    def _records(
        self, fn: str, window: Window, times: frozenset[str], key: str
    ) -> Iterator[dict[str, Any]]:
        for row in self._api.pages(fn, _window(window), after=_key(key, "id")):
            yield {name: utc_time(value) if name in times else value for name, value in row.items()}

    def stream_alerts(self, window: Window) -> Iterator[dict[str, Any]]:
        return self._records(
            "billing_api_stream_alerts",
            window,
            frozenset({"created_at", "updated_at", "acknowledged_at", "resolved_at"}),
            "created_at",
        )

    def stream_dunning(self, window: Window) -> Iterator[dict[str, Any]]:
        return self._records(
            "billing_api_stream_dunning",
            window,
            frozenset({"due_at", "sent_at", "created_at", "updated_at"}),
            "due_at",
        )

    def export_row_count(self, dataset: str, window: Window) -> int | None:
        count = self._api.rpc(
            "billing_api_export_row_count", {"p_dataset": dataset, **_window(window)}
        )
        return None if count is None else int(count)

    # --- audit ----------------------------------------------------------------------------
    def append_audit(self, entry: AuditDraft, now: datetime) -> int:
        return int(
            self._api.rpc(
                "billing_api_append_audit",
                {
                    "p_actor": entry.actor,
                    "p_action": entry.action,
                    "p_target": entry.target,
                    "p_outcome": entry.outcome,
                    "p_idempotency_key": entry.idempotency_key,
                    "p_details": dict(entry.details),
                    "p_now": iso(now),
                },
            )
        )

    def audit_trail(self, target: str, limit: int = 100) -> list[AuditRecord]:
        return self._audit_lines({"p_target": target, "p_since": None, "p_until": None}, limit)

    def audit_between(
        self, since: datetime, until: datetime, limit: int | None = None
    ) -> list[AuditRecord]:
        return self._audit_lines(
            {"p_target": None, "p_since": iso(since), "p_until": iso(until)}, limit
        )

    def _audit_lines(self, filters: dict[str, Any], limit: int | None) -> list[AuditRecord]:
        if limit is not None and limit <= 0:
            return []
        rows = self._api.pages(
            "billing_api_audit_lines",
            filters,
            after=_key("occurred_at", "id"),
            page_size=PAGE_SIZE if limit is None else min(PAGE_SIZE, limit),
        )
        return [audit_record_of(row) for row in islice(rows, limit)]
