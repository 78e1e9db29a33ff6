"""The finance dashboard: MRR, fees, credits, open work, pause state and sync freshness."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final

from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.domain.dunning import PAUSE_SETTING, PauseState
from cloudgreet_billing.domain.mrr import mrr_by_currency
from cloudgreet_billing.domain.reconciliation import Window
from cloudgreet_billing.domain.timefmt import parse_instant
from cloudgreet_billing.domain.words import plural
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services.dunning.reach import unreachable_invoices
from cloudgreet_billing.services.recovery import build_recovery_report, recovery_window
from cloudgreet_billing.services.sync import LAST_SYNC_KEY

if TYPE_CHECKING:
    from cloudgreet_billing.domain.recovery import RecoveryReport

#: Where a completed ``sync`` run may record its time; without it, the newest processed
#: event (any source: API, webhook, file, backfill) tells when the mirror last moved.
#: A sync older than this is worth a warning: the mirror may be missing failures.
STALE_SYNC: Final = timedelta(days=1)
LEDGER_DAYS: Final = 30
#: Caveats about MRR listed one by one; past this only their count is shown.
MAX_NOTES: Final = 20


@dataclass(frozen=True, slots=True)
class Dashboard:
    generated_at: datetime
    mrr: dict[str, int]
    mrr_subscriptions: int
    booking_fees_30d: dict[str, int]
    credit_adjustments_30d: dict[str, int]
    open_alerts: dict[str, int]
    past_due_count: int
    past_due_amounts: dict[str, int]
    dunning_due_today: int
    dunning_needs_review: int
    #: Unpaid invoices in dunning that no channel can reach (``services.dunning.reach``).
    dunning_unreachable: int
    pause: PauseState
    last_sync_at: datetime | None
    #: Stripe events that could not be applied, waiting in quarantine.
    quarantined_events: int = 0
    warnings: list[str] = field(default_factory=list)
    mrr_notes: list[str] = field(default_factory=list)
    #: ``dunning report``'s figures over the last 30 days (``services.recovery``).
    recovery: RecoveryReport | None = None

    @property
    def last_sync_age(self) -> timedelta | None:
        return None if self.last_sync_at is None else self.generated_at - self.last_sync_at


def last_sync_time(value: Any) -> datetime | None:
    """The moment ``services.sync.record_sync`` stored, if any."""
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value, field=LAST_SYNC_KEY)
    except BadInput:
        return None


def _latest(*moments: datetime | None) -> datetime | None:
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


def _age(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    if hours >= 48:
        return plural(hours // 24, "day")
    if hours >= 1:
        return plural(hours, "hour")
    return plural(max(int(delta.total_seconds() // 60), 0), "minute")


def build_dashboard(store: Store, *, now: datetime) -> Dashboard:
    """Every figure as of ``now``; ledger figures cover the last 30 days."""
    mrr = mrr_by_currency(store.recurring_subscriptions(), now)
    ledger_window = Window(start=now - timedelta(days=LEDGER_DAYS), end=now)
    past_due_count, past_due_amounts = store.past_due_totals(now)
    start_of_tomorrow = datetime.combine(now.date() + timedelta(days=1), time(), now.tzinfo)
    workload = store.dunning_workload(start_of_tomorrow)
    unreachable = len(unreachable_invoices(store))
    pause = PauseState.from_setting(store.get_setting(PAUSE_SETTING))
    last_sync = _latest(
        last_sync_time(store.get_setting(LAST_SYNC_KEY)), store.last_event_processed_at()
    )

    warnings = []
    if last_sync is None:
        warnings.append("no sync recorded: run `cloudgreet-billing sync`")
    elif now - last_sync > STALE_SYNC:
        warnings.append(f"last sync was {_age(now - last_sync)} ago (older than a day)")
    if pause.paused:
        warnings.append(f"dunning is paused: {pause.reason or 'no reason given'}")
    quarantined = store.count_quarantined()
    if quarantined:
        warnings.append(
            f"{plural(quarantined, 'Stripe event')} could not be applied and "
            f"{'waits' if quarantined == 1 else 'wait'} in quarantine: "
            "see `cloudgreet-billing quarantine list`"
        )
    if unreachable:
        warnings.append(
            f"{plural(unreachable, 'unpaid invoice')} in dunning cannot be reached: no contact "
            "on any of their channels (alerts list --type dunning_undeliverable)"
        )
    notes = mrr.notes[:MAX_NOTES]
    if len(mrr.notes) > MAX_NOTES:
        notes.append(f"… and {len(mrr.notes) - MAX_NOTES} more")
    return Dashboard(
        generated_at=now,
        mrr=mrr.by_currency,
        mrr_subscriptions=mrr.subscriptions_counted,
        booking_fees_30d=store.ledger_kind_totals(ledger_window, "booking_fee"),
        credit_adjustments_30d=store.ledger_kind_totals(ledger_window, "credit_adjustment"),
        open_alerts=store.open_alert_counts(),
        past_due_count=past_due_count,
        past_due_amounts=past_due_amounts,
        dunning_due_today=workload.due,
        dunning_needs_review=workload.needs_review,
        dunning_unreachable=unreachable,
        pause=pause,
        last_sync_at=last_sync,
        quarantined_events=quarantined,
        warnings=warnings,
        mrr_notes=notes,
        recovery=build_recovery_report(store, recovery_window(now)),
    )
