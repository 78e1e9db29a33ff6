"""The sync suites' store-level tests (tests/sync: events, quarantine, event order; and
the discounts an event must not erase, tests/finance), run
again with the Supabase store: every operation it has goes through REST
(``test_mirror.ThroughRest``), so each batch of events is one call of
``billing_api_apply_event_plans``. What these tests read back through other areas
(alerts, steps, quarantine rows, the tests' own SQL) goes through REST too once the
Supabase store has it, and to the project's database as its owner until then.

Left out: the tests that drive the CLI or a second store by URL (``store_env``,
``postgres_url``), which pick their backend from the environment.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.finance.test_mrr_discounts_mirror import (  # noqa: F401 (collected here)
    test_a_discount_the_mirror_never_saw_is_reported_with_the_fix,
    test_an_event_keeps_the_coupons_backfill_expanded,
)
from tests.supabase.test_mirror import owner, store  # noqa: F401 (fixtures)
from tests.sync.test_event_order import (  # noqa: F401 (collected here)
    test_a_canceled_subscription_stays_canceled,
    test_a_payment_before_its_failure_keeps_the_failure_and_reopens_nothing,
    test_a_subscription_updated_twice_in_the_same_second,
    test_an_older_failure_delivered_late_moves_canceled_steps_too,
    test_an_uncollectible_invoice_paid_later_resolves_as_written_off,
    test_any_order_with_replays_gives_the_state_of_the_order_stripe_created,
    test_attempt_count_never_falls_and_the_highest_attempt_names_the_failure,
    test_customer_updates_in_the_same_second_and_a_deletion,
    test_finalized_and_payment_failed_in_the_same_second_reversed,
    test_paid_and_payment_succeeded_in_the_same_second_resolve_alike,
)
from tests.sync.test_events import (  # noqa: F401 (collected here)
    test_a_batch_equals_one_event_at_a_time_in_state_and_counts,
    test_a_failing_handler_leaves_the_event_unprocessed_and_keeps_the_batch,
    test_a_failure_processed_after_the_payment_never_reopens_and_keeps_its_history,
    test_a_statement_failing_mid_batch_leaves_out_only_its_event,
    test_action_required_and_stripe_usage_alerts,
    test_an_older_event_never_overwrites_newer_mirror_state,
    test_every_settling_event_resolves,
    test_failure_opens_one_alert_and_schedules_dunning_from_the_first_failure,
    test_legacy_invoice_shape_and_customer_deletion,
    test_payment_resolves_the_alert_and_cancels_pending_steps,
    test_replaying_the_history_three_times_shuffled_equals_one_ordered_pass,
    test_the_same_event_twice_changes_nothing,
    test_unknown_types_are_recorded_and_skipped,
)
from tests.sync.test_quarantine import (  # noqa: F401 (collected here)
    test_a_payment_event_after_a_quarantined_failure_still_resolves,
    test_a_plan_made_without_its_event_is_still_kept_under_its_own_id,
    test_a_retry_that_still_fails_keeps_it_quarantined_with_the_new_reason,
    test_an_event_processed_before_is_not_quarantined_by_a_bad_copy,
    test_an_event_the_store_refuses_is_quarantined_and_its_batch_kept,
    test_dismissing_keeps_the_row_and_audits,
    test_events_without_a_usable_id_are_kept_once_by_their_payload,
    test_one_bad_event_among_300_is_quarantined_and_the_rest_applied,
    test_payloads_any_text_column_holds_nul_and_deep_nesting,
)


@pytest.fixture
def shared_store(request: pytest.FixtureRequest) -> Any:
    """test_event_order's store: here a fresh one per test (each test wipes it first)."""
    return request.getfixturevalue("store")
