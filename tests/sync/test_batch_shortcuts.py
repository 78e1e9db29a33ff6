"""A file of events leaves the same store as the same events delivered one at a time.

``sync --events-file`` applies events in batches, and a batch leaves out work that other
events of the same batch make moot: the object of an invoice event that a later state of
the invoice replaces is not stored, and on SQLite an event that changes nothing the batch
does not (``invoice.created`` before ``invoice.paid``) is not sent, nor are a settlement's
relabelling and cancelling for an invoice with nothing to relabel or cancel. A webhook
applies each event alone, with none of that. Both must end in the same mirror, alerts,
dunning steps and audit, on both stores.
"""

from __future__ import annotations

from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.services.sync import apply_events
from tests.sync.conftest import T0, event, full_invoice
from tests.sync.histories import NOW, apply, deliveries, histories, wipe
from tests.sync.test_event_order import whole_state

BATCH_SETTINGS: Final = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
INVOICE: Final = "in_1QpL8HLkdIwHu7ixSh0rtCut"
CUSTOMER: Final = "cus_RiJ2m0yQbTgC4x"


@BATCH_SETTINGS
@given(data=st.data())
def test_a_file_in_one_batch_leaves_what_one_event_at_a_time_leaves(
    shared_store: Any, data: Any
) -> None:
    history = data.draw(histories(max_invoices=3))
    arrived = [item for delivery in data.draw(deliveries(history)) for item in delivery]

    wipe(shared_store)
    apply(shared_store, *([item] for item in arrived))
    one_at_a_time = whole_state(shared_store)

    wipe(shared_store)
    apply(shared_store, arrived)
    assert whole_state(shared_store) == one_at_a_time


def lifecycle() -> list[dict[str, Any]]:
    """One invoice created, finalized, failed twice and paid, all in one file."""

    def invoice(status: str, attempts: int) -> dict[str, Any]:
        return full_invoice(INVOICE, customer=CUSTOMER, status=status, attempt_count=attempts)

    return [
        event("evt_1QpL8ILkdIwHu7ixCre4ted0", "invoice.created", invoice("draft", 0), T0),
        event("evt_1QpL8ILkdIwHu7ixFin4l1zd", "invoice.finalized", invoice("open", 0), T0 + 1),
        event("evt_1QpL8ILkdIwHu7ixFa1led01", "invoice.payment_failed", invoice("open", 1), T0 + 1),
        event("evt_1QpL8ILkdIwHu7ixFa1led02", "invoice.payment_failed", invoice("open", 2), T0 + 9),
        event("evt_1QpL8ILkdIwHu7ixPa1d0001", "invoice.paid", invoice("paid", 2), T0 + 20),
    ]


def test_an_invoice_lifecycle_in_one_file_shows_its_last_state(shared_store: Any) -> None:
    events = lifecycle()
    wipe(shared_store)
    report = apply_events(shared_store, events, source="file", now=NOW)

    assert (report.events_applied, report.alerts_opened, report.alerts_resolved) == (5, 1, 1)
    assert (report.dunning_scheduled, report.dunning_canceled) == (3, 3)
    shown = shared_store.get_invoice(INVOICE)
    assert (shown.status, shown.attempt_count) == ("paid", 2)
    assert shown.raw == events[-1]["data"]["object"]
    state = whole_state(shared_store)

    wipe(shared_store)
    apply(shared_store, *([item] for item in events))
    assert whole_state(shared_store) == state


def test_a_batch_redone_event_by_event_keeps_the_object_of_the_last_event_applied(
    shared_store: Any,
) -> None:
    # The failure plans a step the store refuses (a CHECK constraint): the batch is redone
    # one event at a time and the failure quarantined. The invoice shows the finalized
    # object, which the failure would have replaced had the whole batch been applied.
    planner = TimelinePlanner()

    def planner_the_store_refuses(**kwargs: Any) -> list[Any]:
        from dataclasses import replace

        steps = planner(**kwargs)
        return [replace(steps[0], channel="fax"), *steps[1:]]

    events = lifecycle()[:3]
    wipe(shared_store)
    report = apply_events(
        shared_store, events, source="file", now=NOW, planner=planner_the_store_refuses
    )

    assert (report.events_applied, report.events_failed) == (2, 1)
    (row,) = shared_store.list_quarantined()
    assert row.event_id == "evt_1QpL8ILkdIwHu7ixFa1led01"
    shown = shared_store.get_invoice(INVOICE)
    assert (shown.status, shown.attempt_count) == ("open", 0)
    assert shown.raw == events[1]["data"]["object"]
