"""The dunning timeline, step records, and the rules a run applies to each due step.

Opening an ``invoice_failed`` alert plans the invoice's steps (``TimelinePlanner``); paying,
voiding or marking the invoice uncollectible cancels every step not yet sent. The store
applies both inside the same transaction as the event that caused them.

A run claims due steps (``scheduled`` → ``sending``, with a lease), decides each one here
(``decide``), confirms just before handing a message over, and records the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from cloudgreet_billing.config import read_config_file
from cloudgreet_billing.domain.exemptions import Exemption
from cloudgreet_billing.domain.statuses import (
    SETTLED_INVOICE_STATUSES,
)
from cloudgreet_billing.errors import ConfigError

CHANNELS: Final = ("email", "sms")

SUPERSEDED: Final = "superseded"
PAUSE_SETTING: Final = "dunning.pause"
DEFAULT_ESCALATE_AFTER: Final = 3
DEFAULT_LEASE: Final = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class TimelineStep:
    """One step of the timeline: on ``day`` after the first failure, send ``template``."""

    day: int
    channel: str
    template: str


DEFAULT_TIMELINE: Final = (
    TimelineStep(0, "email", "day0_email"),
    TimelineStep(1, "sms", "day1_sms"),
    TimelineStep(3, "email", "day3_email"),
)


@dataclass(frozen=True, slots=True)
class StepDraft:
    """A step to schedule in ``billing_dunning_events``."""

    invoice_id: str
    customer_id: str
    alert_id: int | None
    day: int
    channel: str
    template: str
    due_at: datetime


class DunningPlanner(Protocol):
    """Plans an invoice's steps when its ``invoice_failed`` alert opens."""

    def __call__(
        self, *, invoice_id: str, customer_id: str, alert_id: int | None, first_failed_at: datetime
    ) -> Sequence[StepDraft]: ...


@dataclass(frozen=True)
class TimelinePlanner:
    """The planner for a timeline (the default one, or ``BILLING_CONFIG``'s)."""

    timeline: Sequence[TimelineStep] = DEFAULT_TIMELINE

    def __call__(
        self, *, invoice_id: str, customer_id: str, alert_id: int | None, first_failed_at: datetime
    ) -> list[StepDraft]:
        # Days count from the invoice's first failure, not from when we learned of it.
        return [
            StepDraft(
                invoice_id=invoice_id,
                customer_id=customer_id,
                alert_id=alert_id,
                day=step.day,
                channel=step.channel,
                template=step.template,
                due_at=first_failed_at + timedelta(days=step.day),
            )
            for step in self.timeline
        ]


# --- configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class DunningConfig:
    """The ``[dunning]`` table of ``BILLING_CONFIG``, or the defaults."""

    timeline: tuple[TimelineStep, ...] = DEFAULT_TIMELINE
    escalate_after: int = DEFAULT_ESCALATE_AFTER
    lease: timedelta = DEFAULT_LEASE
    #: Operations' own templates, searched before the packaged ones.
    templates_dir: Path | None = None
    #: The customer portal's login page (Stripe dashboard: Settings → Billing → Customer
    #: portal → "Login link"), where a customer adds a new card: a hard decline's messages
    #: link it. Without one they link the invoice's payment page, which takes a new card too.
    portal_url: str | None = None

    @property
    def planner(self) -> TimelinePlanner:
        return TimelinePlanner(self.timeline)


def load_dunning_config(path: Path | None) -> DunningConfig:
    """Read ``[dunning]`` from a TOML file; defaults for anything it leaves out.

    Example::

        [dunning]
        escalate_after = 3          # completed steps before a dunning_exhausted alert
        lease_minutes = 10          # a step left in "sending" longer becomes needs_review
        templates_dir = "templates" # relative to this file; day0_email.txt, …
        portal_url = "https://billing.stripe.com/p/login/…"  # a hard decline's new-card link

        [[dunning.steps]]
        day = 0
        channel = "email"
        template = "day0_email"
    """
    if path is None:
        return DunningConfig()
    document = read_config_file(path)
    section = document.get("dunning", {})
    if not isinstance(section, dict):
        raise ConfigError(f"BILLING_CONFIG {path}: [dunning] must be a table")
    where = f"BILLING_CONFIG {path}: dunning"
    known = {"steps", "escalate_after", "lease_minutes", "templates_dir", "portal_url"}
    unknown = set(section) - known
    if unknown:
        raise ConfigError(
            f"{where} has unknown keys: {', '.join(sorted(unknown))}",
            hint=f"known keys: {', '.join(sorted(known))}",
        )
    timeline: tuple[TimelineStep, ...] = DEFAULT_TIMELINE
    if "steps" in section:
        timeline = _timeline(section["steps"], where)
    escalate_after = _positive_int(section, "escalate_after", DEFAULT_ESCALATE_AFTER, where)
    lease_minutes = _positive_int(
        section, "lease_minutes", int(DEFAULT_LEASE.total_seconds() // 60), where
    )
    templates_dir = None
    if "templates_dir" in section:
        raw = section["templates_dir"]
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{where}.templates_dir must be a folder path")
        templates_dir = (path.parent / raw).resolve()
        if not templates_dir.is_dir():
            raise ConfigError(f"{where}.templates_dir {templates_dir} is not a folder")
    portal_url = section.get("portal_url")
    if portal_url is not None and (
        not isinstance(portal_url, str) or not portal_url.startswith("https://")
    ):
        raise ConfigError(
            f"{where}.portal_url must be an https:// link, not {portal_url!r}",
            hint="copy the customer portal's login link from the Stripe dashboard "
            "(Settings → Billing → Customer portal)",
        )
    return DunningConfig(
        timeline=timeline,
        escalate_after=escalate_after,
        lease=timedelta(minutes=lease_minutes),
        templates_dir=templates_dir,
        portal_url=portal_url,
    )


def _positive_int(section: dict[str, Any], key: str, default: int, where: str) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{key} must be a whole number of at least 1, not {value!r}")
    return value


def _timeline(raw: Any, where: str) -> tuple[TimelineStep, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}.steps must be a non-empty array of tables ([[dunning.steps]])")
    steps: list[TimelineStep] = []
    for number, item in enumerate(raw, start=1):
        label = f"{where}.steps[{number}]"
        if not isinstance(item, dict) or set(item) - {"day", "channel", "template"}:
            raise ConfigError(f"{label} must have only day, channel and template")
        day, channel, template = item.get("day"), item.get("channel"), item.get("template")
        if isinstance(day, bool) or not isinstance(day, int) or day < 0:
            raise ConfigError(f"{label}.day must be a whole number of days from 0, not {day!r}")
        if channel not in CHANNELS:
            raise ConfigError(f"{label}.channel must be email or sms, not {channel!r}")
        if not isinstance(template, str) or not template.replace("_", "").isalnum():
            raise ConfigError(
                f"{label}.template must be a template name such as day0_email, not {template!r}"
            )
        steps.append(TimelineStep(day, channel, template))
    keys = [(step.day, step.channel) for step in steps]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}.steps has two steps on the same day and channel")
    return tuple(sorted(steps, key=lambda step: (step.day, step.channel)))


# --- records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DunningStep:
    """A row of ``billing_dunning_events``."""

    id: int
    invoice_id: str
    customer_id: str
    alert_id: int | None
    day: int
    channel: str
    template: str
    status: str
    due_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    reason: str | None = None
    provider_message_id: str | None = None
    claimed_by: str | None = None
    lease_expires_at: datetime | None = None
    #: When the run holding the step confirmed it, just before handing its message to a
    #: provider; cleared whenever the step is claimed, released or requeued.
    confirmed_at: datetime | None = None

    @property
    def may_have_been_sent(self) -> bool | None:
        """For a step mid-send or waiting for review: whether its message may have reached
        the provider (its attempt was confirmed: handed over, or about to be), so that only
        the provider's log can tell ``mark-sent`` from ``requeue``. False: it never left, and
        ``requeue`` is safe. None for every other status, where the question does not arise.
        """
        if self.status not in ("sending", "needs_review"):
            return None
        return self.confirmed_at is not None


# --- contacts ---------------------------------------------------------------------

CONTACT_NAMES: Final = {"email": "email address", "sms": "phone number"}


@dataclass(frozen=True, slots=True)
class CustomerContact:
    """The mirrored customer's contact details, as of when the mirror observed them."""

    email: str | None
    phone: str | None
    name: str | None
    observed_at: datetime
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class InvoiceContact:
    """The contact details Stripe copied onto the invoice when it was finalized."""

    email: str | None
    phone: str | None
    name: str | None
    finalized_at: datetime | None


@dataclass(frozen=True, slots=True)
class Contact:
    """Whom dunning writes to: an email address, a phone number, a name to greet."""

    email: str | None = None
    phone: str | None = None
    name: str | None = None
    #: The customer was deleted in Stripe: nobody is messaged automatically.
    customer_deleted: bool = False


def freshest_contact(customer: CustomerContact | None, invoice: InvoiceContact) -> Contact:
    """The freshest contact we know, field by field (email, phone, name).

    - A customer deleted in Stripe is written to by nobody: deleting one can be an erasure
      request, and the invoice's copy is the data that was erased. A person decides.
    - A customer record observed at or after the invoice was finalized is the later word,
      even where it is empty: an address removed since is not used from the invoice's copy.
    - Otherwise (no customer mirrored, or one observed before the invoice was finalized)
      the invoice's copy is fresher; where it is empty, the customer's value stands. An
      invoice whose finalization time is unknown counts as older than the customer.
    """
    if customer is not None and customer.deleted:
        return Contact(name=customer.name or invoice.name, customer_deleted=True)
    if customer is None:
        return Contact(invoice.email, invoice.phone, invoice.name)
    if invoice.finalized_at is None or customer.observed_at >= invoice.finalized_at:
        return Contact(customer.email, customer.phone, customer.name)
    return Contact(
        invoice.email or customer.email,
        invoice.phone or customer.phone,
        invoice.name or customer.name,
    )


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    """What a message says about an invoice and its customer, from the Stripe mirror; the
    contact fields are ``freshest_contact``'s."""

    invoice_id: str
    customer_id: str
    status: str | None = None
    number: str | None = None
    amount_due: int | None = None
    amount_remaining: int | None = None
    currency: str | None = None
    hosted_invoice_url: str | None = None
    first_failed_at: datetime | None = None
    customer_name: str | None = None
    email: str | None = None
    phone: str | None = None
    customer_deleted: bool = False
    #: When Stripe charges the invoice again itself, and the last failure's decline: what
    #: a message says to do (``services.dunning.messages``).
    next_payment_attempt: datetime | None = None
    decline_code: str | None = None
    advice_code: str | None = None

    @property
    def mirrored(self) -> bool:
        return self.status is not None

    @property
    def settled(self) -> bool:
        return self.status in SETTLED_INVOICE_STATUSES

    def contact(self, channel: str) -> str | None:
        if self.customer_deleted:
            return None
        return self.email if channel == "email" else self.phone

    def reachable(self, channels: Iterable[str]) -> frozenset[str]:
        """Which of ``channels`` have a contact to write to."""
        return frozenset(channel for channel in channels if self.contact(channel))


def unreachable_reason(facts: InvoiceFacts, channels: Iterable[str]) -> str:
    """Why no channel of an invoice's dunning can reach its customer."""
    if facts.customer_deleted:
        return f"customer {facts.customer_id} was deleted in Stripe"
    wanted = " or ".join(CONTACT_NAMES[channel] for channel in sorted(channels))
    return f"customer {facts.customer_id} has no {wanted}"


@dataclass(frozen=True, slots=True)
class InvoiceReach:
    """An unpaid invoice in dunning: whom it would write to, and on which channels."""

    facts: InvoiceFacts
    #: The channels its steps use, and those of its steps still scheduled.
    channels: frozenset[str]
    scheduled: frozenset[str] = frozenset()

    @property
    def reachable(self) -> frozenset[str]:
        return self.facts.reachable(self.channels)

    @property
    def unreachable(self) -> bool:
        """No channel of its dunning has a contact: no reminder can reach the customer."""
        return not self.reachable

    @property
    def next_reminder_reaches(self) -> bool:
        """A step still to come will go out on a channel that has a contact."""
        return bool(self.facts.reachable(self.scheduled))


@dataclass(frozen=True, slots=True)
class ClaimedStep:
    """A due step as a run sees it: the row, its invoice, whether a later step is due, the
    channels the invoice's steps use, and its customer's exemption from dunning, if any."""

    step: DunningStep
    invoice: InvoiceFacts
    superseded: bool = False
    channels: frozenset[str] = frozenset(CHANNELS)
    exemption: Exemption | None = None


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What happened to a claimed step; recorded only while the run still holds it."""

    step_id: int
    status: str
    reason: str | None = None
    error: str | None = None
    provider_message_id: str | None = None
    #: A ``skipped`` step that no channel could deliver: the store opens the invoice's
    #: ``dunning_undeliverable`` alert with it.
    undeliverable: bool = False
    #: A ``skipped`` step whose customer is exempt from dunning.
    exempt: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """``send``; or ``skip``, ``exempt``, ``cancel``, ``fail`` or ``undeliverable`` with the
    reason. An exempt step is recorded as skipped; so is an undeliverable one, and a person
    is told."""

    action: str
    reason: str | None = None


def decide(claimed: ClaimedStep) -> Decision:
    """What a run does with a due step, before any message is built."""
    if claimed.invoice.settled:
        return Decision("cancel", f"invoice is {claimed.invoice.status}")
    if claimed.exemption is not None:
        # A person decided this customer is not reminded (a payment plan, a VIP).
        return Decision("exempt", claimed.exemption.skip_reason)
    if claimed.superseded:
        # Cron was down or the failure was learned late: only the latest due step goes out.
        return Decision("skip", SUPERSEDED)
    if not claimed.invoice.mirrored:
        # Without the invoice there is no amount or pay link to write: a human must look.
        return Decision(
            "fail", f"invoice {claimed.step.invoice_id} is not in the local mirror (run sync)"
        )
    channel = claimed.step.channel
    channels = claimed.channels | {channel}
    if not claimed.invoice.reachable(channels):
        return Decision("undeliverable", unreachable_reason(claimed.invoice, channels))
    if not claimed.invoice.contact(channel):
        # Another of the invoice's channels reaches the customer: this step is not needed.
        return Decision(
            "skip", f"customer {claimed.step.customer_id} has no {CONTACT_NAMES[channel]}"
        )
    return Decision("send")


@dataclass(frozen=True, slots=True)
class EscalationCandidate:
    """An unpaid invoice whose completed steps reached the escalation count."""

    invoice_id: str
    customer_id: str
    completed: int
    amount_due: int | None
    currency: str | None
    alert_id: int | None = None


@dataclass(frozen=True, slots=True)
class PauseState:
    """The incident switch, as stored under ``PAUSE_SETTING``."""

    paused: bool
    reason: str | None = None
    actor: str | None = None
    at: str | None = None
    #: Reasons added by a confirmed pause while already paused (``reason``, ``actor``,
    #: ``at`` each), oldest first; the first pause's own stay above.
    also: tuple[dict[str, str], ...] = ()

    @classmethod
    def from_setting(cls, value: Any) -> PauseState:
        if not isinstance(value, dict):
            return cls(paused=False)
        also = value.get("also")
        return cls(
            paused=bool(value.get("paused")),
            reason=value.get("reason"),
            actor=value.get("actor"),
            at=value.get("at"),
            also=tuple(note for note in also if isinstance(note, dict))
            if isinstance(also, list)
            else (),
        )
