"""The store merges as ``domain.merge`` says, on SQLite and PostgreSQL (hypothesis).

Two observations of one object, with drawn statuses, times (often the same second),
attempts and event ids, applied in both orders: the store shows the one whose key in
``domain.merge`` is the largest (the earliest, for a settlement), whichever came last.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudgreet_billing.adapters.store.protocol_alerts import AlertQuery
from cloudgreet_billing.domain.merge import (
    customer_key,
    failure_key,
    invoice_key,
    settlement,
    settlement_key,
    subscription_key,
)
from cloudgreet_billing.domain.statuses import INVOICE_STATUSES, SUBSCRIPTION_STATUSES
from tests.sync.conftest import T0, event
from tests.sync.histories import (
    CUSTOMER,
    DAY,
    INVOICE,
    SUBSCRIPTION,
    apply,
    customer_object,
    invoice_object,
    subscription_object,
    wipe,
)

KEY_SETTINGS: Final = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SETTLING: Final = {
    "paid": ("invoice.paid", "invoice.payment_succeeded"),
    "void": ("invoice.voided",),
    "uncollectible": ("invoice.marked_uncollectible",),
}

#: Two distinct event ids of Stripe's length, in either byte order.
event_ids = st.lists(
    st.text("ABCXYZabcxyz0189", min_size=4, max_size=4), min_size=2, max_size=2, unique=True
).map(lambda salts: [f"evt_1QpL8ILkdIwHu7ix{salt}A0b1" for salt in salts])
seconds = st.sampled_from([T0, T0, T0 + 1])


def at(created: int) -> datetime:
    return datetime.fromtimestamp(created, UTC)


@KEY_SETTINGS
@given(
    statuses=st.lists(st.sampled_from(sorted(INVOICE_STATUSES)), min_size=2, max_size=2),
    attempts=st.lists(st.integers(0, 3), min_size=2, max_size=2),
    created=st.lists(seconds, min_size=2, max_size=2),
    ids=event_ids,
)
def test_an_invoice_shows_the_observation_with_the_largest_key(
    shared_store: Any, statuses: list[str], attempts: list[int], created: list[int], ids: list[str]
) -> None:
    observed = []
    for n in range(2):
        obj = invoice_object(
            INVOICE,
            CUSTOMER,
            SUBSCRIPTION,
            status=statuses[n],
            attempt_count=attempts[n],
            created=T0 - DAY,
            amount=1000 + n,
        )
        observed.append(event(ids[n], "invoice.updated", obj, created[n]))
    keys = [invoice_key(statuses[n], at(created[n]), attempts[n], ids[n]) for n in range(2)]
    winner = keys.index(max(keys))
    for order in ((0, 1), (1, 0)):
        wipe(shared_store)
        apply(shared_store, *([observed[n]] for n in order))
        mirrored = shared_store.get_invoice(INVOICE)
        assert (mirrored.amount_due, mirrored.status) == (1000 + winner, statuses[winner])
        assert mirrored.attempt_count == max(attempts)


@KEY_SETTINGS
@given(
    statuses=st.lists(st.sampled_from(sorted(SUBSCRIPTION_STATUSES)), min_size=2, max_size=2),
    periods=st.lists(st.sampled_from([0, 30 * DAY]), min_size=2, max_size=2),
    created=st.lists(seconds, min_size=2, max_size=2),
    ids=event_ids,
)
def test_a_subscription_shows_the_observation_with_the_largest_key(
    shared_store: Any, statuses: list[str], periods: list[int], created: list[int], ids: list[str]
) -> None:
    observed, keys = [], []
    for n in range(2):
        start = T0 - 30 * DAY + periods[n]
        obj = subscription_object(
            SUBSCRIPTION, CUSTOMER, status=statuses[n], created=T0 - 30 * DAY, period_start=start
        )
        obj["metadata"] = {"observation": str(n)}
        observed.append(event(ids[n], "customer.subscription.updated", obj, created[n]))
        period_end = at(start + 30 * DAY)
        keys.append(subscription_key(statuses[n], at(created[n]), period_end, ids[n]))
    winner = keys.index(max(keys))
    for order in ((0, 1), (1, 0)):
        wipe(shared_store)
        apply(shared_store, *([observed[n]] for n in order))
        mirrored = shared_store.get_subscription(SUBSCRIPTION)
        assert (mirrored.status, mirrored.raw["metadata"]) == (
            statuses[winner],
            {"observation": str(winner)},
        )


@KEY_SETTINGS
@given(
    deleted=st.lists(st.booleans(), min_size=2, max_size=2),
    created=st.lists(seconds, min_size=2, max_size=2),
    ids=event_ids,
)
def test_a_customer_shows_the_observation_with_the_largest_key(
    shared_store: Any, deleted: list[bool], created: list[int], ids: list[str]
) -> None:
    observed = []
    for n in range(2):
        obj = customer_object(CUSTOMER, email=f"owner{n}@brightsmiles.example", created=T0)
        kind = "customer.deleted" if deleted[n] else "customer.updated"
        observed.append(event(ids[n], kind, obj, created[n]))
    keys = [customer_key(deleted[n], at(created[n]), ids[n]) for n in range(2)]
    winner = keys.index(max(keys))
    for order in ((0, 1), (1, 0)):
        wipe(shared_store)
        apply(shared_store, *([observed[n]] for n in order))
        mirrored = shared_store.get_customer(CUSTOMER)
        assert (mirrored.email, mirrored.deleted) == (
            f"owner{winner}@brightsmiles.example",
            deleted[winner],
        )


@KEY_SETTINGS
@given(
    attempts=st.lists(st.integers(1, 3), min_size=2, max_size=2),
    created=st.lists(seconds, min_size=2, max_size=2),
    ids=event_ids,
    declines=st.lists(st.booleans(), min_size=2, max_size=2),
)
def test_the_last_failure_is_the_one_with_the_largest_key(
    shared_store: Any,
    attempts: list[int],
    created: list[int],
    ids: list[str],
    declines: list[bool],
) -> None:
    observed = []
    for n in range(2):
        # A decline code, or only an error code (no decline: Stripe's generic refusal).
        code = f"decline_{n}"
        decline = ("card_declined", code, f"Declined, observation {n}.")
        if not declines[n]:
            decline = (code, None, f"Declined, observation {n}.")
        obj = invoice_object(
            INVOICE,
            CUSTOMER,
            SUBSCRIPTION,
            status="open",
            attempt_count=attempts[n],
            created=T0 - DAY,
            amount=12900,
            decline=decline,
        )
        observed.append(event(ids[n], "invoice.payment_failed", obj, created[n]))
    keys = [
        failure_key(attempts[n], at(created[n]), ids[n], carries_decline=declines[n])
        for n in range(2)
    ]
    winner = keys.index(max(keys))
    alert_keys = [failure_key(attempts[n], at(created[n]), ids[n]) for n in range(2)]
    alerted = alert_keys.index(max(alert_keys))
    for order in ((0, 1), (1, 0)):
        wipe(shared_store)
        apply(shared_store, *([observed[n]] for n in order))
        mirrored = shared_store.get_invoice(INVOICE)
        assert mirrored.last_failure_code == f"decline_{winner}"
        assert mirrored.last_decline_code == (f"decline_{winner}" if declines[winner] else None)
        assert mirrored.first_failed_at == at(min(created))
        (alert,) = shared_store.list_alerts(AlertQuery(statuses=None, limit=None))
        assert (alert.stripe_event_id, alert.attempt_count) == (ids[alerted], max(attempts))


@KEY_SETTINGS
@given(
    statuses=st.lists(st.sampled_from(sorted(SETTLING)), min_size=2, max_size=2),
    created=st.lists(seconds, min_size=2, max_size=2),
    ids=event_ids,
    data=st.data(),
)
def test_the_earliest_settlement_resolves_the_invoice(
    shared_store: Any, statuses: list[str], created: list[int], ids: list[str], data: Any
) -> None:
    failure = event(
        "evt_1QpL8ILkdIwHu7ixPf2aLd0B",
        "invoice.payment_failed",
        invoice_object(
            INVOICE,
            CUSTOMER,
            SUBSCRIPTION,
            status="open",
            attempt_count=1,
            created=T0 - DAY,
            amount=12900,
        ),
        T0 - 60,
    )
    settling = []
    for n in range(2):
        obj = invoice_object(
            INVOICE,
            CUSTOMER,
            SUBSCRIPTION,
            status=statuses[n],
            attempt_count=1,
            created=T0 - DAY,
            amount=12900,
        )
        kind = data.draw(st.sampled_from(SETTLING[statuses[n]]))
        settling.append(event(ids[n], kind, obj, created[n]))
    keys = [settlement_key(at(created[n]), ids[n]) for n in range(2)]
    first = keys.index(min(keys))
    expected = settlement(statuses[first], ids[first])
    for arrived in (
        [failure, settling[0], settling[1]],
        [settling[1], failure, settling[0]],
        [settling[1], settling[0], failure],
    ):
        wipe(shared_store)
        apply(shared_store, *([item] for item in arrived))
        (alert,) = shared_store.list_alerts(AlertQuery(statuses=None, limit=None))
        assert (alert.status, alert.resolution) == ("resolved", expected)
        steps = shared_store.list_steps(invoice_id=INVOICE, limit=None)
        assert {(step.status, step.reason) for step in steps} == {("canceled", expected)}
