"""``incident summary``: gather the window's facts from the store, and post them to Slack."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cloudgreet_billing.domain.alerts import UNRESOLVED_STATUSES
from cloudgreet_billing.domain.dunning import PAUSE_SETTING, PauseState
from cloudgreet_billing.domain.incident import (
    IncidentFacts,
    IncidentSummary,
    actions_of,
    summarise,
    to_slack,
)
from cloudgreet_billing.errors import BillingError, ExitCode

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.notify.protocol import ChatPoster
    from cloudgreet_billing.adapters.store.protocol import Store


def incident_summary(
    store: Store, *, since: datetime, until: datetime, mode: str | None = None
) -> IncidentSummary:
    """Read-only: the alerts opened and resolved in the window, every action the audit
    log holds for it, and what is still waiting now."""
    touched = store.alerts_touched(since, until)
    actions, routine = actions_of(store.audit_between(since, until))
    facts = IncidentFacts(
        since=since,
        until=until,
        failed=[a for a in touched if since <= a.created_at < until],
        resolved=[
            a for a in touched if a.resolved_at is not None and since <= a.resolved_at < until
        ],
        still_open=[a for a in touched if a.status in UNRESOLVED_STATUSES],
        actions=actions,
        routine=routine,
        pause=PauseState.from_setting(store.get_setting(PAUSE_SETTING)),
        needs_review=store.count_needs_review(),
        quarantined=store.count_quarantined(),
        mode=mode,
    )
    return summarise(facts)


def post_summary(summary: IncidentSummary, chat: ChatPoster | None, handle: str) -> None:
    """Post to ``billing_ops``; a failure says why, with the contract's exit code."""
    from cloudgreet_billing.adapters.notify.protocol import DeliveryError

    if chat is None:
        raise BillingError(
            "--post needs SLACK_WEBHOOK_URL",
            hint="set SLACK_WEBHOOK_URL to the billing_ops incoming webhook, or drop --post",
            code="config",
            exit_code=ExitCode.BAD_INPUT,
        )
    try:
        chat.post(to_slack(summary, handle))
    except DeliveryError as error:
        raise BillingError(
            f"the summary was not posted: {error}",
            hint="run it again once Slack answers, or without --post and paste the Markdown",
            code="delivery",
            exit_code=ExitCode.UNAVAILABLE if error.retryable else ExitCode.FAILED,
        ) from None
