"""``sync --verify``: compare the mirror with Stripe's lists, and repair it on request.

Invoices are compared over a window of ``created`` (``--days``), read from Stripe in
week-long windows. Subscriptions are compared whole: MRR is computed from every live
subscription, however old, and there are far fewer of them than invoices. Stripe lists
the ones not canceled; a subscription the mirror still holds live but Stripe no longer
lists is fetched by id, to learn what became of it.

With ``repair``, each object that differs gets Stripe's current version, observed now,
through the same guarded upsert events use: a settled invoice is never reopened (a
difference that remains is reported as not repaired, for a person). An invoice Stripe
reports settled also resolves its alerts and cancels its pending dunning steps, in the
same transaction, so nobody is dunned for a paid invoice the mirror missed. Each repair
writes an audit line (``sync.repair``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.payments import StripeRequestFailed
from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.domain.drift import (
    MAX_VERIFY_DAYS,
    Difference,
    compare_invoice,
    compare_subscription,
    windows,
)
from cloudgreet_billing.domain.mirror import parse_invoice, parse_subscription
from cloudgreet_billing.domain.statuses import SETTLED_INVOICE_STATUSES
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.errors import BadInput

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.payments import PaymentGateway
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.domain.mirror import MirroredInvoice, MirroredSubscription
    from cloudgreet_billing.services import Progress

#: List pages per second: a fifth of Stripe's sandbox read limit (25 per second; 100 in
#: live mode, https://docs.stripe.com/rate-limits), so a check running beside the live
#: traffic leaves the limit to it. A 429 is still retried with back-off by the gateway.
PAGES_PER_SECOND = 5.0
ACTOR = "stripe:verify"


@dataclass
class VerifyReport:
    since: datetime
    until: datetime
    repair: bool
    invoices_checked: int = 0
    subscriptions_checked: int = 0
    differences: list[Difference] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)

    @property
    def repaired(self) -> int:
        return len({(d.object, d.id) for d in self.differences if d.repaired})

    @property
    def objects_differing(self) -> int:
        return len({(d.object, d.id) for d in self.differences})

    @property
    def needs_attention(self) -> bool:
        # Even a repaired difference pages: the mirror drifted, so a webhook or a sync
        # was lost, and someone should find out why.
        return bool(self.differences or self.unreadable)

    def as_json(self) -> dict[str, Any]:
        return {
            "since": iso_z(self.since),
            "until": iso_z(self.until),
            "repair": self.repair,
            "invoices_checked": self.invoices_checked,
            "subscriptions_checked": self.subscriptions_checked,
            "objects_differing": self.objects_differing,
            "repaired": self.repaired,
            "differences": [d.as_json() for d in self.differences],
            "unreadable": self.unreadable,
        }


def check_days(days: int) -> int:
    if not 1 <= days <= MAX_VERIFY_DAYS:
        raise BadInput(
            f"--days {days} is out of range",
            hint=f"give 1 to {MAX_VERIFY_DAYS}; `sync --backfill` mirrors everything",
        )
    return days


def verify(
    store: Store,
    gateway: PaymentGateway,
    *,
    now: datetime,
    days: int,
    repair: bool,
    progress: Progress | None = None,
) -> VerifyReport:
    """Compare, and with ``repair`` apply Stripe's objects; reads nothing else."""
    report = VerifyReport(since=now - timedelta(days=check_days(days)), until=now, repair=repair)
    compared: set[str] = set()
    for start, end in windows(report.since, now):
        _verify_invoices(store, gateway, report, (start, end), compared, now, progress)
    _verify_subscriptions(store, gateway, report, now, progress)
    return report


def _verify_invoices(
    store: Store,
    gateway: PaymentGateway,
    report: VerifyReport,
    window: tuple[datetime, datetime],
    compared: set[str],
    now: datetime,
    progress: Progress | None,
) -> None:
    start, end = window
    mirrored = store.mirrored_invoices_created(start, end)
    listed: set[str] = set()
    for obj in gateway.list_invoices(created_gte=start, created_lt=end):
        if progress is not None:
            progress(1)
        remote = _readable(report, "invoice", obj, parse_invoice)
        if remote is None:
            report.invoices_checked += 1
            continue
        listed.add(remote.id)
        # Stripe keeps to the window; a server that does not (stripe-mock answers every
        # list with its one fixture) must not make an invoice count, or differ, twice.
        if remote.id in compared:
            continue
        compared.add(remote.id)
        report.invoices_checked += 1
        local = mirrored.get(remote.id) or store.get_invoice(remote.id)
        found = compare_invoice(local, remote)
        if found and report.repair:
            found = _repair_invoice(store, remote, found, now)
        report.differences += found
    # Stripe lists every invoice it still has; only a deleted draft disappears.
    for invoice_id in sorted(mirrored.keys() - listed):
        report.differences.append(
            Difference(
                "invoice",
                invoice_id,
                "not_in_stripe_list",
                mirror=mirrored[invoice_id].status,
            )
        )


def _verify_subscriptions(
    store: Store,
    gateway: PaymentGateway,
    report: VerifyReport,
    now: datetime,
    progress: Progress | None,
) -> None:
    mirrored = store.mirrored_subscriptions()
    listed: set[str] = set()
    for obj in gateway.list_subscriptions(status=None):
        report.subscriptions_checked += 1
        if progress is not None:
            progress(1)
        remote = _readable(report, "subscription", obj, parse_subscription)
        if remote is None:
            continue
        listed.add(remote.id)
        _check_subscription(store, report, mirrored.get(remote.id), remote, now)
    for sub_id in sorted(mirrored.keys() - listed):
        local = mirrored[sub_id]
        if local.status == "canceled":
            continue
        # Live here, not listed by Stripe: canceled since, or deleted with its customer.
        report.subscriptions_checked += 1
        try:
            obj = gateway.retrieve_subscription(sub_id)
        except StripeRequestFailed as error:
            if error.stripe_code != "resource_missing":
                raise
            report.differences.append(
                Difference("subscription", sub_id, "not_in_stripe_list", mirror=local.status)
            )
            continue
        remote = _readable(report, "subscription", obj, parse_subscription)
        if remote is not None:
            _check_subscription(store, report, local, remote, now)


def _check_subscription(
    store: Store,
    report: VerifyReport,
    local: MirroredSubscription | None,
    remote: MirroredSubscription,
    now: datetime,
) -> None:
    found = compare_subscription(local, remote)
    if found and report.repair:
        audit = _audit("subscription", remote.id, found)
        after = store.repair_subscription(remote, audit=audit, now=now)
        found = _settled(found, after is not None and not compare_subscription(after, remote))
    report.differences += found


def _repair_invoice(
    store: Store, remote: MirroredInvoice, found: list[Difference], now: datetime
) -> list[Difference]:
    settle = (
        f"Stripe says {remote.status} (sync --verify --repair)"
        if remote.status in SETTLED_INVOICE_STATUSES
        else None
    )
    after = store.repair_invoice(
        remote, settle=settle, audit=_audit("invoice", remote.id, found), now=now
    )
    return _settled(found, after is not None and not compare_invoice(after, remote))


def _settled(found: list[Difference], repaired: bool) -> list[Difference]:
    return [replace(d, repaired=repaired) for d in found]


def _audit(kind: str, object_id: str, found: list[Difference]) -> AuditDraft:
    return AuditDraft(
        actor=ACTOR,
        action="sync.repair",
        target=object_id,
        outcome="applied",
        details={
            "object": kind,
            "differences": [
                {"problem": d.problem, "field": d.field, "mirror": d.mirror, "stripe": d.stripe}
                for d in found
            ],
        },
    )


def _readable(report: VerifyReport, kind: str, obj: Any, parse: Any) -> Any:
    """The parsed object, or None (noted) when Stripe sent a value we cannot read."""
    try:
        return parse(obj)
    except BadInput as error:
        object_id = obj.get("id") if isinstance(obj, dict) else None
        report.unreadable.append(
            {"object": kind, "id": str(object_id or "?"), "reason": error.message}
        )
        return None
