"""Monthly recurring revenue, normalised the way the MRR analytics vendors do it.

- Only ``active`` and ``past_due`` subscriptions count; ``trialing``, ``incomplete``,
  ``incomplete_expired``, ``unpaid``, ``canceled`` and paused collection do not. One set to
  cancel at the period end still counts until that end.
- Each item counts unit amount × quantity, normalised to a month: month ÷ interval_count;
  year ÷ (12 × interval_count); week × 52 ÷ 12 ÷ interval_count; day × 365 ÷ 12 ÷ interval_count.
- Metered prices (``usage_type=metered``) are booking fees, not MRR. Tax is excluded: a
  tax-inclusive price is reduced by its inclusive tax rates.
- ``forever`` discounts and ``repeating`` ones still in effect reduce MRR (``percent_off``, or
  ``amount_off`` in the subscription's currency); ``once`` discounts do not. Item discounts
  apply to their item, subscription discounts to the whole; a discount never makes MRR negative.
- Arithmetic is exact (fractions); only the final figure per currency is rounded, half-up,
  to the minor unit.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

from cloudgreet_billing.domain.mirror import MirroredSubscription
from cloudgreet_billing.domain.statuses import COUNTED_STATUSES
from cloudgreet_billing.domain.timefmt import from_unix
from cloudgreet_billing.domain.words import plural

#: Months per interval unit.
MONTHS_PER: Final[Mapping[str, Fraction]] = {
    "month": Fraction(1),
    "year": Fraction(12),
    "week": Fraction(12, 52),
    "day": Fraction(12, 365),
}
ONE_HALF: Final = Fraction(1, 2)


@dataclass(frozen=True, slots=True)
class SubscriptionMrr:
    """One subscription's contribution: exact, unrounded, plus what could not be counted."""

    subscription_id: str
    currency: str
    amount: Fraction
    counted: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MrrSummary:
    """MRR per currency in minor units, the subscriptions counted, and caveats for people."""

    by_currency: dict[str, int]
    subscriptions_counted: int
    notes: list[str] = field(default_factory=list)


def _fraction(value: Any) -> Fraction:
    """JSON numbers (``25.5``) and decimal strings, exactly as written."""
    return Fraction(Decimal(str(value)))


def counts_towards_mrr(subscription: MirroredSubscription, now: datetime) -> bool:
    """Whether the subscription is recurring revenue right now."""
    if subscription.status not in COUNTED_STATUSES or subscription.collection_paused:
        return False
    raw = subscription.raw or {}
    ended_at = from_unix(raw.get("ended_at"))
    if ended_at is not None and ended_at <= now:
        return False
    cancel_at = from_unix(raw.get("cancel_at"))
    if cancel_at is not None and cancel_at <= now:
        return False
    period_end = subscription.current_period_end
    return not (subscription.cancel_at_period_end and period_end is not None and period_end <= now)


def _months(interval: str | None, interval_count: Any) -> Fraction | None:
    """How many months one billing period lasts, or None for an unknown interval."""
    per = MONTHS_PER.get(interval or "")
    count = int(interval_count or 1)
    if per is None or count <= 0:
        return None
    return per * count


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    last_day = calendar.monthrange(year, month)[1]
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def _coupon(discount: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The coupon behind a discount: ``discount.coupon`` or, since 2025, ``source.coupon``."""
    coupon = discount.get("coupon")
    if coupon is None:
        source = discount.get("source")
        if isinstance(source, Mapping):
            coupon = source.get("coupon")
    return coupon if isinstance(coupon, Mapping) else None


def discount_in_effect(
    discount: Mapping[str, Any], coupon: Mapping[str, Any], now: datetime
) -> bool:
    """``forever``, or ``repeating`` and not yet ended; never ``once``."""
    duration = coupon.get("duration")
    if duration == "forever":
        return True
    if duration != "repeating":
        return False
    start = from_unix(discount.get("start"))
    if start is not None and start > now:
        return False
    end = from_unix(discount.get("end"))
    if end is None and start is not None and coupon.get("duration_in_months"):
        end = _add_months(start, int(coupon["duration_in_months"]))
    return end is None or now < end


def _amount_off(coupon: Mapping[str, Any], currency: str) -> int | None:
    """The coupon's fixed amount in ``currency``, when it has one there."""
    if str(coupon.get("currency") or "").lower() == currency and coupon.get("amount_off"):
        return int(coupon["amount_off"])
    options = coupon.get("currency_options")
    if isinstance(options, Mapping) and isinstance(options.get(currency), Mapping):
        amount = options[currency].get("amount_off")
        return int(amount) if amount else None
    return None


_EXPAND: Final = "; run sync --backfill to read them"


def _discount_objects(holder: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], int]:
    """Expanded discounts on a subscription or item, and how many are only ids. The older
    API shape sends one expanded ``discount`` beside the ``discounts`` ids, often the same
    discount under both: it counts once, as expanded."""
    listed = holder.get("discounts") or []
    legacy = holder.get("discount")
    found: dict[str, Mapping[str, Any]] = {}
    for discount in [*listed, *([legacy] if legacy else [])]:
        if isinstance(discount, Mapping):
            found.setdefault(str(discount.get("id") or id(discount)), discount)
    ids = {d for d in listed if isinstance(d, str) and d not in found}
    return list(found.values()), len(ids)


def _apply_discounts(
    amount: Fraction,
    discounts: Sequence[Mapping[str, Any]],
    currency: str,
    now: datetime,
    amount_off_scale: Fraction,
    notes: list[str],
    where: str,
) -> Fraction:
    """Apply each discount in effect in order; ``amount_off`` is per period, scaled to a month."""
    for discount in discounts:
        coupon = _coupon(discount)
        if coupon is None:
            notes.append(f"{where}: discount {discount.get('id')} has no expanded coupon")
            continue
        if not discount_in_effect(discount, coupon, now):
            continue
        if coupon.get("percent_off") is not None:
            amount -= amount * _fraction(coupon["percent_off"]) / 100
        elif coupon.get("amount_off"):
            fixed = _amount_off(coupon, currency)
            if fixed is None:
                notes.append(
                    f"{where}: coupon {coupon.get('id')} is in "
                    f"{str(coupon.get('currency')).lower()}, not {currency}; not applied"
                )
                continue
            amount -= fixed * amount_off_scale
        amount = max(amount, Fraction(0))
    return amount


def _inclusive_tax_factor(
    item: Mapping[str, Any], price: Mapping[str, Any], default_rates: Sequence[Any]
) -> Fraction | None:
    """What to multiply a tax-inclusive amount by to remove its tax; None when unknown."""
    if price.get("tax_behavior") != "inclusive":
        return Fraction(1)
    rates = item.get("tax_rates") or default_rates
    inclusive = [
        _fraction(rate.get("percentage") or 0)
        for rate in rates
        if isinstance(rate, Mapping) and rate.get("inclusive")
    ]
    if not inclusive:
        return None
    return 1 / (1 + sum(inclusive, Fraction(0)) / 100)


def _unit_amount(price: Mapping[str, Any]) -> Fraction | None:
    if price.get("unit_amount_decimal") is not None:
        return _fraction(price["unit_amount_decimal"])
    if price.get("unit_amount") is not None:
        return Fraction(int(price["unit_amount"]))
    if price.get("amount") is not None:  # a legacy plan
        return Fraction(int(price["amount"]))
    return None


def subscription_mrr(subscription: MirroredSubscription, now: datetime) -> SubscriptionMrr:
    """The subscription's MRR in minor units of its currency, exact."""
    sub_id = subscription.id
    currency = subscription.currency
    if not counts_towards_mrr(subscription, now):
        return SubscriptionMrr(sub_id, currency, Fraction(0), counted=False)
    raw = subscription.raw or {}
    notes: list[str] = []
    items = raw.get("items")
    item_list = items.get("data") if isinstance(items, Mapping) else None
    if isinstance(items, Mapping) and items.get("has_more"):
        notes.append(f"{sub_id}: more items than the mirror holds; counted the first page")
    default_rates = raw.get("default_tax_rates") or []
    monthly = Fraction(0)
    period_months: Fraction | None = None
    for item in item_list or []:
        price = item.get("price") or item.get("plan") or {}
        recurring = price.get("recurring") or {}
        usage_type = recurring.get("usage_type") or price.get("usage_type") or "licensed"
        if usage_type == "metered":
            continue
        where = f"{sub_id} item {item.get('id')}"
        item_currency = str(price.get("currency") or currency).lower()
        if item_currency != currency:
            notes.append(f"{where}: priced in {item_currency}, not {currency}; left out")
            continue
        months = _months(
            recurring.get("interval") or price.get("interval"),
            recurring.get("interval_count") or price.get("interval_count"),
        )
        unit = _unit_amount(price)
        if months is None or unit is None:
            notes.append(f"{where}: no per-unit recurring price (tiered?); left out")
            continue
        quantity = int(item.get("quantity") if item.get("quantity") is not None else 1)
        period_amount = unit * quantity
        item_discounts, item_ids = _discount_objects(item)
        if item_ids:
            notes.append(
                f"{where}: {plural(item_ids, 'discount')} not expanded in the mirror{_EXPAND}"
            )
        period_amount = _apply_discounts(
            period_amount, item_discounts, currency, now, Fraction(1), notes, where
        )
        tax_factor = _inclusive_tax_factor(item, price, default_rates)
        if tax_factor is None:
            notes.append(f"{where}: tax-inclusive price without an inclusive tax rate; tax kept")
            tax_factor = Fraction(1)
        monthly += period_amount * tax_factor / months
        period_months = period_months or months
    sub_discounts, sub_ids = _discount_objects(raw)
    if sub_ids:
        notes.append(f"{sub_id}: {plural(sub_ids, 'discount')} not expanded in the mirror{_EXPAND}")
    if period_months is not None:
        monthly = _apply_discounts(
            monthly, sub_discounts, currency, now, 1 / period_months, notes, sub_id
        )
    return SubscriptionMrr(sub_id, currency, monthly, counted=True, notes=tuple(notes))


def round_half_up(amount: Fraction) -> int:
    """To the nearest integer; halves away from zero."""
    magnitude = int(abs(amount) + ONE_HALF)
    return -magnitude if amount < 0 else magnitude


def mrr_by_currency(subscriptions: Iterable[MirroredSubscription], now: datetime) -> MrrSummary:
    """Sum exact contributions per currency; round each currency's total once."""
    totals: dict[str, Fraction] = {}
    counted = 0
    notes: list[str] = []
    for subscription in subscriptions:
        contribution = subscription_mrr(subscription, now)
        notes.extend(contribution.notes)
        if not contribution.counted:
            continue
        counted += 1
        totals[contribution.currency] = (
            totals.get(contribution.currency, Fraction(0)) + contribution.amount
        )
    return MrrSummary(
        by_currency={currency: round_half_up(totals[currency]) for currency in sorted(totals)},
        subscriptions_counted=counted,
        notes=notes,
    )
