"""``dunning exempt``, ``unexempt`` and ``exemptions``: customers dunning must not remind.

Exempting changes who gets reminded, both ways: an exempt customer's due steps are skipped
(``dunning run``), and unexempting lets their steps still to come go out. So each is
confirmed (``Safety``: a prompt on a terminal, ``--yes`` elsewhere), like ``mark-sent`` and
``requeue``; each is audited in the transaction that makes the change.

A second exempt of an exempt customer keeps the first reason and actor, as a second
``dunning pause`` keeps the first pause: without confirmation it refuses, saying who
exempted them and why; confirmed, it notes the new reason in the audit log beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudgreet_billing.adapters.store.protocol import Store
from cloudgreet_billing.adapters.store.protocol_exemptions import EXEMPT, UNEXEMPT
from cloudgreet_billing.domain.exemptions import Exemption, ExemptOutcome
from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.errors import BadInput, NotFound
from cloudgreet_billing.services.actions.common import (
    AuditStory,
    ConfirmRequest,
    Safety,
    ask,
    customer_label,
    refuse_unconfirmed,
)
from cloudgreet_billing.services.dunning.operator import YES_HINT


def _request(store: Store, action: str, customer_id: str, question: str) -> ConfirmRequest:
    return ConfirmRequest(
        action=action,
        question=question,
        mode="",
        customer_id=customer_id,
        customer_label=customer_label(store, customer_id),
        invoice_id=None,
        amount=None,
        currency=None,
    )


def _scheduled(store: Store, customer_id: str) -> int:
    return store.count_steps(statuses=("scheduled",), customer_id=customer_id)


def _reminders(count: int) -> str:
    return f"{count:,} scheduled reminder" + ("" if count == 1 else "s")


def describe(exemption: Exemption, *, already: bool = False) -> str:
    """``cus_… is exempt, by alice at 2026-03-02T09:00:00Z: payment plan``."""
    return (
        f"{exemption.customer_id} is {'already ' if already else ''}exempt, by "
        f"{exemption.actor} at {iso_z(exemption.created_at)}: {exemption.reason}"
    )


def _require_known(store: Store, customer_id: str) -> None:
    """An id the store knows nothing of is more often a typo than a plan agreed ahead: an
    exemption of a wrong id would leave the right customer reminded."""
    if store.get_customer(customer_id) is None and not store.count_steps(customer_id=customer_id):
        raise NotFound(
            f"customer {customer_id} is not in {store.backend} ({store.location}): "
            "no mirrored customer and no dunning steps",
            hint="check the id (dunning list, alerts list --customer); a customer not yet "
            "mirrored appears after `cloudgreet-billing sync --backfill`",
        )


def exempt(
    store: Store,
    customer_id: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
    safety: Safety | None = None,
) -> ExemptOutcome:
    """Exempt a customer from dunning until ``unexempt``: every run skips their due steps,
    saying why. Confirmed (``safety``; exit 3 without)."""
    safety = safety or Safety()
    text = reason.strip()
    if not text:
        raise BadInput(
            "--reason must say why the customer is not reminded",
            hint="e.g. --reason 'payment plan until 2027-01'",
        )
    _require_known(store, customer_id)
    current = store.get_exemption(customer_id)
    if current is not None:
        return _exempt_again(store, current, text, actor, now, safety)
    story = AuditStory.of(store, actor, EXEMPT, customer_id, safety, {"given_reason": text})
    refuse_unconfirmed(story, safety, f"exempting {customer_id} from dunning", hint=YES_HINT)
    pending = _scheduled(store, customer_id)
    ask(
        story,
        safety,
        _request(
            store,
            "exempt",
            customer_id,
            f"Exempt {customer_id} from dunning ({text})? Their {_reminders(pending)} "
            f"{'is' if pending == 1 else 'are'} skipped when due, until `dunning unexempt`.",
        ),
        nothing="the customer is not exempt",
    )
    return store.exempt_customer(customer_id, reason=text, actor=actor, now=now)


def _exempt_again(
    store: Store, current: Exemption, reason: str, actor: str, now: datetime, safety: Safety
) -> ExemptOutcome:
    story = AuditStory.of(
        store,
        actor,
        EXEMPT,
        current.customer_id,
        safety,
        {
            "given_reason": reason,
            "exempt_reason": current.reason,
            "exempted_by": current.actor,
            "exempted_at": iso_z(current.created_at),
        },
    )
    already = describe(current, already=True)
    refuse_unconfirmed(
        story,
        safety,
        already,
        hint="that exemption stays as it is; --yes notes your reason beside it in the audit log",
    )
    ask(
        story,
        safety,
        _request(
            store,
            "exempt",
            current.customer_id,
            f"{already}. Keep it, and note your reason ({reason}) in the audit log?",
        ),
        nothing="the exemption is unchanged",
    )
    return store.exempt_customer(current.customer_id, reason=reason, actor=actor, now=now)


@dataclass(frozen=True, slots=True)
class UnexemptOutcome:
    """What ``unexempt`` did: ``ended`` is the exemption it ended (None: the customer was
    not exempt, and nothing changed); ``scheduled`` counts their steps still to go out,
    ``due`` those of them due now, which the next run sends."""

    customer_id: str
    ended: Exemption | None
    scheduled: int
    due: int


def unexempt(
    store: Store,
    customer_id: str,
    *,
    actor: str,
    now: datetime,
    safety: Safety | None = None,
) -> UnexemptOutcome:
    """End a customer's exemption: their steps still scheduled go out when due. Steps a
    run skipped while they were exempt stay skipped (``requeue`` sends one again).
    Confirmed (``safety``); a customer who is not exempt is told so, unasked."""
    safety = safety or Safety()
    current = store.get_exemption(customer_id)
    if current is not None:
        story = AuditStory.of(
            store,
            actor,
            UNEXEMPT,
            customer_id,
            safety,
            {"exempt_reason": current.reason, "exempted_by": current.actor},
        )
        refuse_unconfirmed(story, safety, f"unexempting {customer_id}", hint=YES_HINT)
        pending = _scheduled(store, customer_id)
        due = store.count_steps(statuses=("scheduled",), customer_id=customer_id, until=now)
        soon = (
            f"; {due:,} of them {'is' if due == 1 else 'are'} due now and the next run sends "
            f"{'it' if due == 1 else 'them'}"
            if due
            else ""
        )
        ask(
            story,
            safety,
            _request(
                store,
                "unexempt",
                customer_id,
                f"End the exemption ({describe(current)})? Their {_reminders(pending)} "
                f"{'goes' if pending == 1 else 'go'} out when due{soon}.",
            ),
            nothing="the customer stays exempt",
        )
    ended = store.unexempt_customer(customer_id, actor=actor, now=now)
    scheduled = _scheduled(store, customer_id)
    due = store.count_steps(statuses=("scheduled",), customer_id=customer_id, until=now)
    return UnexemptOutcome(customer_id, ended, scheduled, due)


@dataclass(frozen=True)
class ExemptionListing:
    """The exemptions ``dunning exemptions`` shows, and how many there are in all."""

    exemptions: list[Exemption]
    total: int


def list_exemptions(store: Store, *, limit: int) -> ExemptionListing:
    """Customers exempt now, oldest exemption first."""
    exemptions = store.list_exemptions(limit=limit)
    total = store.count_exemptions() if len(exemptions) >= limit else len(exemptions)
    return ExemptionListing(exemptions, total)
