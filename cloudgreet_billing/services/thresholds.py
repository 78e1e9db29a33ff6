"""Ledger thresholds: ``threshold_exceeded`` alerts when a customer's usage in a UTC day
passes a limit set in ``BILLING_CONFIG``.

Example::

    [[thresholds]]
    name = "booking-fees-per-day"   # names the alert; one alert per customer and day
    kind = "booking_fee"            # subscription, booking_fee or credit_adjustment
    currency = "usd"
    max_amount = "500.00"           # per customer per UTC day, in major units
    # max_count = 200               # and/or at most this many entries a day

Checked after ``ledger add`` and ``ledger import``, with one grouped query per rule and day
touched (never per row). A later breach on the same day updates the open alert.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.config import read_config_file
from cloudgreet_billing.domain.alerts import Alert, AlertDraft
from cloudgreet_billing.domain.ledger import check_kind
from cloudgreet_billing.domain.money import format_money, parse_currency, to_minor_units
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.errors import BadInput, ConfigError

#: An import spanning more days than this is checked over its last days only.
MAX_DAYS_CHECKED = 366


@dataclass(frozen=True, slots=True)
class LedgerThreshold:
    name: str
    kind: str
    currency: str
    max_amount: int | None
    max_count: int | None

    def breached(self, amount: int, entries: int) -> bool:
        return (self.max_amount is not None and amount > self.max_amount) or (
            self.max_count is not None and entries > self.max_count
        )

    def describe(self, amount: int, entries: int) -> str:
        parts = []
        if self.max_amount is not None:
            parts.append(
                f"{format_money(amount, self.currency)} of {self.kind} "
                f"(limit {format_money(self.max_amount, self.currency)})"
            )
        if self.max_count is not None:
            parts.append(f"{entries} {self.kind} entries (limit {self.max_count})")
        return f"{self.name}: " + ", ".join(parts)


def load_thresholds(path: Path | None) -> list[LedgerThreshold]:
    """The ``[[thresholds]]`` of ``BILLING_CONFIG``; none without the file."""
    if path is None:
        return []
    document = read_config_file(path)
    raw = document.get("thresholds", [])
    if not isinstance(raw, list):
        raise ConfigError(f"BILLING_CONFIG {path}: thresholds must be [[thresholds]] tables")
    return [_rule(item, f"BILLING_CONFIG {path}: thresholds[{i}]") for i, item in enumerate(raw)]


def _rule(item: Any, where: str) -> LedgerThreshold:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(item) - {"name", "kind", "currency", "max_amount", "max_count"}
    if unknown:
        raise ConfigError(
            f"{where} has unknown keys: {', '.join(sorted(unknown))}",
            hint="known keys: name, kind, currency, max_amount, max_count",
        )
    try:
        name = str(item["name"])
        kind = check_kind(str(item["kind"]))
        currency = parse_currency(str(item.get("currency", "usd")))
        max_amount = (
            to_minor_units(str(item["max_amount"]), currency) if "max_amount" in item else None
        )
    except KeyError as exc:
        raise ConfigError(f"{where} needs {exc.args[0]}") from None
    except BadInput as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    max_count = item.get("max_count")
    if max_count is not None and (not isinstance(max_count, int) or max_count < 0):
        raise ConfigError(f"{where}.max_count must be a whole number")
    if max_amount is None and max_count is None:
        raise ConfigError(f"{where} needs max_amount or max_count")
    return LedgerThreshold(name, kind, currency, max_amount, max_count)


def check_ledger_thresholds(
    store: Store,
    rules: list[LedgerThreshold],
    *,
    first: datetime,
    last: datetime,
    actor: str,
    now: datetime,
) -> list[Alert]:
    """Raise an alert for every customer over a rule on a UTC day in ``[first, last]``;
    returns the alerts newly opened."""
    if not rules:
        return []
    day = max(_day(first), _day(last) - timedelta(days=MAX_DAYS_CHECKED - 1))
    opened: list[Alert] = []
    while day <= _day(last):
        for rule in rules:
            for total in store.ledger_totals(kind=rule.kind, since=day, until=day + timedelta(1)):
                if total.currency != rule.currency or not rule.breached(
                    total.amount, total.entries
                ):
                    continue
                date = day.date().isoformat()
                draft = AlertDraft(
                    type="threshold_exceeded",
                    dedupe_key=f"threshold_exceeded:ledger:{rule.name}:{total.customer_id}:"
                    f"{total.currency}:{date}",
                    customer_id=total.customer_id,
                    amount_due=total.amount,
                    currency=total.currency,
                    # The entry count orders updates: more entries is the newer picture.
                    attempt_count=total.entries,
                    last_failure=f"{rule.describe(total.amount, total.entries)} on {date}",
                    details={
                        "opened_by": f"ledger:{iso_z(now)}:{uuid.uuid4().hex}",
                        "source": "ledger",
                        "rule": rule.name,
                        "day": date,
                        "kind": rule.kind,
                        "max_amount": rule.max_amount,
                        "max_count": rule.max_count,
                    },
                )
                raised = store.raise_alert(draft, actor=actor, now=now)
                if raised.opened:
                    opened.append(raised.alert)
        day += timedelta(days=1)
    return opened


def _day(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)
