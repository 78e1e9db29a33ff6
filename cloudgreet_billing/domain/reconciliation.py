"""Reconciliation: Stripe's invoiced totals against the usage ledger, per customer and currency.

Every amount is an integer in the currency's minor unit; percentages are ``Decimal`` so that a
threshold of exactly 1.00% is a match and 1.01% is not, with no float in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from cloudgreet_billing.domain.mirror import MirroredInvoice
from cloudgreet_billing.domain.statuses import NOT_BILLED_STATUSES

DEFAULT_THRESHOLD_PCT: Final = Decimal("1.0")
#: Places shown for a variance percentage; the status is decided on the exact value.
PCT_PLACES: Final = Decimal("0.0001")

#: ``(customer_id, currency)``: the grain of reconciliation.
TotalsKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    customer_id: str
    currency: str
    stripe_total: int
    ledger_total: int
    variance: int
    variance_pct: Decimal
    status: str

    @property
    def is_mismatch(self) -> bool:
        return self.status == "mismatch"


def counts_as_billed(invoice: MirroredInvoice, window: Window) -> bool:
    """Whether an invoice enters the Stripe side: created in the window, neither draft nor void."""
    return invoice.status not in NOT_BILLED_STATUSES and invoice.stripe_created in window


def stripe_totals(invoices: Iterable[MirroredInvoice], window: Window) -> dict[TotalsKey, int]:
    """Invoiced amounts (``total_excluding_tax``, else ``total``) per customer and currency."""
    totals: dict[TotalsKey, int] = {}
    for invoice in invoices:
        if counts_as_billed(invoice, window):
            key = (invoice.customer_id, invoice.currency)
            totals[key] = totals.get(key, 0) + invoice.invoiced_amount
    return totals


def variance_pct(stripe_total: int, ledger_total: int) -> Decimal:
    """``|stripe − ledger| / max(|stripe|, |ledger|) × 100``, exactly; 0 when both are 0."""
    base = max(abs(stripe_total), abs(ledger_total))
    if base == 0:
        return Decimal(0)
    return Decimal(abs(stripe_total - ledger_total)) * 100 / Decimal(base)


def over_threshold(stripe_total: int, ledger_total: int, threshold_pct: Decimal) -> bool:
    """Whether the variance percentage is above the threshold, decided without dividing:
    ``|variance| × 100 > threshold × max(|stripe|, |ledger|)`` is exact in ``Decimal``."""
    base = max(abs(stripe_total), abs(ledger_total))
    return abs(stripe_total - ledger_total) * 100 > threshold_pct * base


def reconcile_totals(
    stripe: Mapping[TotalsKey, int],
    ledger: Mapping[TotalsKey, int],
    threshold_pct: Decimal,
) -> list[ReconciliationRow]:
    """One row per customer and currency seen on either side, ordered by customer, currency.

    A side with no amounts counts as 0, so a customer billed in Stripe but absent from the
    ledger (or the reverse) is a 100% variance, not a missing row.
    """
    rows = []
    for customer_id, currency in sorted(set(stripe) | set(ledger)):
        stripe_total = stripe.get((customer_id, currency), 0)
        ledger_total = ledger.get((customer_id, currency), 0)
        pct = variance_pct(stripe_total, ledger_total)
        over = over_threshold(stripe_total, ledger_total, threshold_pct)
        rows.append(
            ReconciliationRow(
                customer_id=customer_id,
                currency=currency,
                stripe_total=stripe_total,
                ledger_total=ledger_total,
                variance=stripe_total - ledger_total,
                variance_pct=pct,
                status="mismatch" if over else "match",
            )
        )
    return rows


def shown_pct(pct: Decimal) -> Decimal:
    """The percentage as reports show it: four places, half-up."""
    return pct.quantize(PCT_PLACES, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class InvoiceDifference:
    """An invoice whose ledger entries (by ``invoice_id``) do not add up to what it billed."""

    invoice_id: str
    currency: str
    stripe_amount: int
    ledger_amount: int

    @property
    def variance(self) -> int:
        return self.stripe_amount - self.ledger_amount


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """A line of an invoice no ledger entry points at."""

    invoice_id: str
    line_id: str | None
    description: str | None
    amount: int
    currency: str


def invoice_lines(invoice: MirroredInvoice) -> list[InvoiceLine]:
    """The invoice's lines as Stripe embedded them; one line for the whole invoice without."""
    lines = invoice.raw.get("lines") if invoice.raw else None
    data = lines.get("data") if isinstance(lines, Mapping) else None
    if not data:
        return [
            InvoiceLine(invoice.id, None, invoice.number, invoice.invoiced_amount, invoice.currency)
        ]
    return [
        InvoiceLine(
            invoice_id=invoice.id,
            line_id=line.get("id"),
            description=line.get("description"),
            amount=int(line.get("amount") or 0),
            currency=str(line.get("currency") or invoice.currency).lower(),
        )
        for line in data
    ]


def lines_truncated(invoice: MirroredInvoice) -> bool:
    """Stripe embeds only the first page of lines; say when there are more."""
    lines = invoice.raw.get("lines") if invoice.raw else None
    return isinstance(lines, Mapping) and bool(lines.get("has_more"))


def invoice_differences(
    invoices: Iterable[MirroredInvoice], ledger_by_invoice: Mapping[tuple[str, str], int]
) -> tuple[list[InvoiceDifference], list[MirroredInvoice]]:
    """Split invoices into those whose ledger sum differs, and those no entry points at.

    ``ledger_by_invoice`` holds ledger sums per ``(invoice_id, currency)``; only entries in
    the invoice's own currency count towards it.
    """
    differing: list[InvoiceDifference] = []
    unmatched: list[MirroredInvoice] = []
    for invoice in sorted(invoices, key=lambda inv: (inv.stripe_created, inv.id)):
        key = (invoice.id, invoice.currency)
        if key not in ledger_by_invoice:
            unmatched.append(invoice)
            continue
        ledger_amount = ledger_by_invoice[key]
        if ledger_amount != invoice.invoiced_amount:
            differing.append(
                InvoiceDifference(
                    invoice_id=invoice.id,
                    currency=invoice.currency,
                    stripe_amount=invoice.invoiced_amount,
                    ledger_amount=ledger_amount,
                )
            )
    return differing, unmatched
