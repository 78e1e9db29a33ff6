"""Reconcile Stripe's invoiced totals against the usage ledger over a window.

The Stripe side comes from the API (and is mirrored on the way), from a saved file, or
from the mirror alone; the ledger side is always summed by the database. With a customer,
the report also traces the difference invoice by invoice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

from cloudgreet_billing.adapters.payments import PaymentGateway
from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.adapters.store.protocol_finance import OpenAlert, PastDueInvoice
from cloudgreet_billing.adapters.store.sql_base import chunked
from cloudgreet_billing.domain.ledger import LedgerEntry
from cloudgreet_billing.domain.mirror import MirroredInvoice, parse_invoice
from cloudgreet_billing.domain.reconciliation import (
    InvoiceDifference,
    InvoiceLine,
    ReconciliationRow,
    Window,
    counts_as_billed,
    invoice_differences,
    invoice_lines,
    lines_truncated,
    reconcile_totals,
    stripe_totals,
)
from cloudgreet_billing.errors import BadInput

#: Invoices mirrored per transaction while listing them from the API (one page).
MIRROR_BATCH: Final = 100


def window_ending(now: datetime, days: int) -> Window:
    """The last ``days`` days up to ``now``, in whole seconds as Stripe's ``created`` is, so
    the API's filter and the window agree exactly."""
    if days < 1:
        raise BadInput(f"--days must be at least 1, not {days}")
    end = now.replace(microsecond=0)
    return Window(start=end - timedelta(days=days), end=end)


@dataclass(frozen=True, slots=True)
class OutsideWindow:
    """Ledger amounts for a billed invoice that fall outside the window (timing differences)."""

    invoice_id: str
    currency: str
    ledger_amount: int


@dataclass(frozen=True, slots=True)
class CustomerTrace:
    """Why one customer's rows differ, line by line.

    Within the window, ``stripe_total − ledger_total`` of a row is exactly the sum of its
    currency's unmatched invoice lines' invoices, plus the differing invoices' variances,
    minus its unmatched entries.
    """

    customer_id: str
    unmatched_entries: list[LedgerEntry]
    unmatched_invoice_lines: list[InvoiceLine]
    invoices_differing: list[InvoiceDifference]
    ledger_outside_window: list[OutsideWindow]
    #: Invoices whose lines Stripe did not embed in full (``lines.has_more``).
    lines_truncated: list[str]


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    window: Window
    threshold_pct: Decimal
    #: ``api``, ``file`` or ``mirror``.
    source: str
    rows: list[ReconciliationRow]
    past_due_invoices: list[PastDueInvoice]
    open_alerts: list[OpenAlert]
    invoices_counted: int
    customer_id: str | None = None
    trace: CustomerTrace | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return sum(row.is_mismatch for row in self.rows)


# --- sources of the Stripe side ---------------------------------------------------------


def pull_invoices(
    gateway: PaymentGateway, store: Store, window: Window, now: datetime
) -> Iterator[MirroredInvoice]:
    """Invoices created in the window, from the API (100 per page, nothing per invoice),
    mirrored one page per transaction as they arrive."""
    listed = gateway.list_invoices(created_gte=window.start, created_lt=window.end)
    for page in chunked((parse_invoice(obj) for obj in listed), MIRROR_BATCH):
        store.upsert_invoices(page, observed_at=now, now=now)
        yield from page


def read_invoices_file(path: str) -> list[MirroredInvoice]:
    """A saved JSON list of invoice objects, or an API list page; ``-`` reads stdin."""
    if path == "-":
        import sys

        return parse_invoices_document(_load_json(sys.stdin, "stdin"), "stdin")
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"{path} is not a file", hint="give the path of a saved invoices JSON")
    with file.open(encoding="utf-8") as stream:
        return parse_invoices_document(_load_json(stream, file.name), file.name)


def _load_json(stream: TextIO, source: str) -> Any:
    try:
        return json.load(stream)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{source} is not JSON: {exc.msg} at line {exc.lineno}",
            hint="save the output of the invoices list API, or a JSON list of invoices",
        ) from None
    except UnicodeDecodeError:
        raise BadInput(f"{source} is not UTF-8 text") from None


def parse_invoices_document(document: Any, source: str) -> list[MirroredInvoice]:
    """Invoices from a JSON list, or from a list page (``{"object": "list", "data": […]}``)."""
    if isinstance(document, Mapping) and isinstance(document.get("data"), list):
        items = document["data"]
    elif isinstance(document, list):
        items = document
    else:
        raise BadInput(
            f"{source} holds neither a list of invoices nor an API list page",
            hint='expected [{"object": "invoice", …}, …] or {"object": "list", "data": […]}',
        )
    invoices = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BadInput(f"{source}: item {index} is not an invoice object")
        try:
            invoices.append(parse_invoice(item))
        except BadInput as exc:
            raise BadInput(f"{source}: item {index}: {exc.message}", hint=exc.hint) from None
    return invoices


# --- the report --------------------------------------------------------------------------


def is_past_due(invoice: MirroredInvoice, now: datetime) -> bool:
    """Open, and either overdue or already failed once (the store's rule, for file invoices)."""
    if invoice.status != "open":
        return False
    overdue = invoice.due_date is not None and invoice.due_date < now
    return overdue or invoice.attempt_count > 0 or invoice.first_failed_at is not None


def _past_due_record(invoice: MirroredInvoice) -> PastDueInvoice:
    return PastDueInvoice(
        id=invoice.id,
        customer_id=invoice.customer_id,
        number=invoice.number,
        currency=invoice.currency,
        amount_due=invoice.amount_due,
        amount_remaining=invoice.amount_remaining,
        due_date=invoice.due_date,
        attempt_count=invoice.attempt_count,
        first_failed_at=invoice.first_failed_at,
        hosted_invoice_url=invoice.hosted_invoice_url,
    )


def reconcile(
    store: Store,
    *,
    window: Window,
    threshold_pct: Decimal,
    now: datetime,
    invoices: Iterable[MirroredInvoice] | None,
    source: str,
    customer_id: str | None = None,
) -> ReconcileReport:
    """Compare the Stripe side (``invoices``, or the mirror when None) with the ledger.

    Example: ``reconcile(store, window=window_ending(now, 30), threshold_pct=Decimal("1.0"),
    now=now, invoices=read_invoices_file("invoices.json"), source="file")``
    """
    customer_invoices: list[MirroredInvoice] = []
    past_due_in_source: list[MirroredInvoice] = []
    if invoices is None:
        stripe = store.mirror_invoice_totals(window, customer_id)
        if customer_id is not None:
            customer_invoices = store.mirror_invoices(window, customer_id)
        counted = None
    else:
        chosen = [
            invoice
            for invoice in invoices
            if customer_id is None or invoice.customer_id == customer_id
        ]
        stripe = stripe_totals(chosen, window)
        counted = sum(counts_as_billed(invoice, window) for invoice in chosen)
        past_due_in_source = [invoice for invoice in chosen if is_past_due(invoice, now)]
        if customer_id is not None:
            customer_invoices = chosen
    ledger = store.ledger_window_totals(window, customer_id)
    rows = reconcile_totals(stripe, ledger, threshold_pct)
    if counted is None:
        counted = store.mirror_invoice_count(window, customer_id)

    past_due = _merge_past_due(store.past_due_invoices(now), past_due_in_source)
    alerts = store.open_alerts()
    if customer_id is not None:
        past_due = [invoice for invoice in past_due if invoice.customer_id == customer_id]
        alerts = [alert for alert in alerts if alert.customer_id == customer_id]
    trace = None
    if customer_id is not None:
        trace = trace_customer(store, customer_id, window, customer_invoices)
    return ReconcileReport(
        window=window,
        threshold_pct=threshold_pct,
        source=source,
        rows=rows,
        past_due_invoices=past_due,
        open_alerts=alerts,
        invoices_counted=counted,
        customer_id=customer_id,
        trace=trace,
    )


def _merge_past_due(
    mirrored: list[PastDueInvoice], from_source: list[MirroredInvoice]
) -> list[PastDueInvoice]:
    """The mirror's past-due invoices, then those only the source (a file) knows about."""
    known = {invoice.id for invoice in mirrored}
    return mirrored + [_past_due_record(inv) for inv in from_source if inv.id not in known]


def trace_customer(
    store: Store, customer_id: str, window: Window, invoices: Iterable[MirroredInvoice]
) -> CustomerTrace:
    """Match the customer's ledger entries to their invoices by ``invoice_id``."""
    billed = [invoice for invoice in invoices if counts_as_billed(invoice, window)]
    entries = store.ledger_entries(window, customer_id)
    billed_keys = {(invoice.id, invoice.currency) for invoice in billed}
    in_window: dict[tuple[str, str], int] = {}
    unmatched_entries = []
    for entry in entries:
        key = (entry.invoice_id or "", entry.currency)
        if key in billed_keys:
            in_window[key] = in_window.get(key, 0) + entry.amount
        else:
            unmatched_entries.append(entry)
    differing, unmatched_invoices = invoice_differences(billed, in_window)
    all_time = store.ledger_sums_by_invoice([invoice.id for invoice in billed])
    outside = [
        OutsideWindow(invoice.id, invoice.currency, amount)
        for invoice in sorted(billed, key=lambda inv: (inv.stripe_created, inv.id))
        if (
            amount := all_time.get((invoice.id, invoice.currency), 0)
            - in_window.get((invoice.id, invoice.currency), 0)
        )
    ]
    return CustomerTrace(
        customer_id=customer_id,
        unmatched_entries=unmatched_entries,
        unmatched_invoice_lines=[
            line for invoice in unmatched_invoices for line in invoice_lines(invoice)
        ],
        invoices_differing=differing,
        ledger_outside_window=outside,
        lines_truncated=[invoice.id for invoice in billed if lines_truncated(invoice)],
    )
