"""The incident summary the playbook asks for: what failed, what was done, what is open.

Pure: the service gathers the facts from the store, this module decides the next steps and
writes them out, as Markdown for the incident document and as Slack ``mrkdwn`` for the
``billing_ops`` post. Everything interpolated here came from Stripe or from an operator
(failure messages, reasons, notes), so each writer escapes it for its own syntax: a
Stripe message must not be able to ping ``@channel`` or break a Markdown list.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.domain.money import format_money
from cloudgreet_billing.domain.timefmt import iso_z, parse_instant
from cloudgreet_billing.errors import BadInput

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol_audit import AuditRecord
    from cloudgreet_billing.domain.alerts import Alert
    from cloudgreet_billing.domain.dunning import PauseState

#: The longest look-back a summary takes: an incident document covers hours or days;
#: a month of audit lines is a report, not a summary.
MAX_LOOKBACK = timedelta(days=31)
#: Lines per section in the Slack post. Slack truncates a message's ``text`` after
#: 40,000 characters (https://api.slack.com/changelog/2018-04-truncating-really-long-messages);
#: the Markdown document is never cut.
SLACK_ITEMS = 15
#: Audit actions written by machines on every run. They are counted, not listed: a
#: day of ``dunning run`` every five minutes would bury the operators' own actions.
ROUTINE_ACTIONS = frozenset({"dunning.run", "alert.open"})

_LOOKBACK = re.compile(r"(\d{1,4})\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def is_lookback(raw: str) -> bool:
    """Whether ``raw`` is a look-back (``2h``) rather than a time."""
    return _LOOKBACK.fullmatch(raw.strip().lower()) is not None


def parse_since(raw: str, now: datetime) -> datetime:
    """``2h``, ``90m``, ``3d``, ``1w`` back from ``now`` (the window's end), or an ISO
    8601 instant before it."""
    text = raw.strip().lower()
    match = _LOOKBACK.fullmatch(text)
    if match:
        amount = int(match.group(1))
        since = now - timedelta(**{_UNITS[match.group(2)]: amount})
    elif text[:1].isdigit() and 10 <= len(text) <= 40:
        since = parse_instant(raw, field="--since")
    else:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise BadInput(
            f"--since {shown!r} is neither a look-back nor a time",
            hint="use e.g. --since 2h, 90m, 3d, or 2026-12-03T06:00:00Z",
        )
    if since >= now:
        raise BadInput(
            "--since must be before the window's end (--until, or now)", hint="e.g. --since 2h"
        )
    if now - since > MAX_LOOKBACK:
        raise BadInput(
            "--since reaches back more than 31 days",
            hint="a summary covers an incident; use `export-csv` or `reconcile` for a month",
        )
    return since


@dataclass(frozen=True, slots=True)
class Action:
    """One audit line of the window, as the summary tells it."""

    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """What the store knew about the window when the summary was asked for."""

    since: datetime
    until: datetime
    failed: Sequence[Alert]
    resolved: Sequence[Alert]
    still_open: Sequence[Alert]
    actions: Sequence[Action]
    routine: Mapping[str, int]
    pause: PauseState
    needs_review: int
    quarantined: int
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    facts: IncidentFacts
    next_steps: Sequence[str] = field(default_factory=tuple)

    def as_json(self, alert_json: Callable[[Alert], dict[str, Any]]) -> dict[str, Any]:
        """The summary's fields; each alert as ``alert_json`` gives it (the contract's
        shape, which the command line owns)."""
        f = self.facts
        return {
            "since": iso_z(f.since),
            "until": iso_z(f.until),
            "failed": [alert_json(a) for a in f.failed],
            "resolved": [alert_json(a) for a in f.resolved],
            "still_open": [alert_json(a) for a in f.still_open],
            "actions": [
                {
                    "at": iso_z(a.at),
                    "actor": a.actor,
                    "action": a.action,
                    "target": a.target,
                    "outcome": a.outcome,
                    "details": dict(a.details),
                }
                for a in f.actions
            ],
            "routine": dict(f.routine),
            "dunning_paused": f.pause.paused,
            "dunning_pause": {"reason": f.pause.reason, "actor": f.pause.actor, "at": f.pause.at},
            "needs_review": f.needs_review,
            "quarantined": f.quarantined,
            "next_steps": list(self.next_steps),
        }


def actions_of(records: Sequence[AuditRecord]) -> tuple[list[Action], dict[str, int]]:
    """The operators' actions in order, and a count of the routine machine lines."""
    actions: list[Action] = []
    routine: Counter[str] = Counter()
    for record in records:
        if record.action in ROUTINE_ACTIONS:
            routine[record.action] += 1
            continue
        actions.append(
            Action(
                at=record.occurred_at,
                actor=record.actor,
                action=record.action,
                target=record.target,
                outcome=record.outcome,
                details=record.details,
            )
        )
    return actions, dict(sorted(routine.items()))


def summarise(facts: IncidentFacts) -> IncidentSummary:
    """The facts plus the next steps they call for, most urgent first."""
    return IncidentSummary(facts=facts, next_steps=tuple(_next_steps(facts)))


def _next_steps(facts: IncidentFacts) -> list[str]:
    steps: list[str] = []
    if facts.pause.paused:
        # The reason is shown under "Dunning", escaped; next steps hold only our own text.
        steps.append(
            "Dunning is paused: once Stripe is healthy (status.stripe.com), "
            "run `cloudgreet-billing dunning resume`."
        )
    by_type = Counter(alert.type for alert in facts.still_open)
    if by_type["invoice_failed"]:
        steps.append(
            f"{_count(by_type['invoice_failed'], 'failed invoice')} still open: "
            "retry each (`cloudgreet-billing retry in_…`) or send the pay link "
            "(`cloudgreet-billing resend-link in_…`)."
        )
    if by_type["payment_action_required"]:
        steps.append(
            f"{_count(by_type['payment_action_required'], 'payment')} waiting for the customer's "
            "authentication: send the pay link (`cloudgreet-billing resend-link in_…`)."
        )
    if by_type["threshold_exceeded"]:
        steps.append(
            f"{_count(by_type['threshold_exceeded'], 'customer')} over the usage threshold: "
            "review the usage with the account owner (`cloudgreet-billing alerts list "
            "--type threshold_exceeded`)."
        )
    others = sum(
        n
        for kind, n in by_type.items()
        if kind not in {"invoice_failed", "payment_action_required", "threshold_exceeded"}
    )
    if others:
        steps.append(f"{_count(others, 'other alert')} open: `cloudgreet-billing alerts list`.")
    if facts.needs_review:
        steps.append(
            f"{_count(facts.needs_review, 'dunning step')} need review: "
            "`cloudgreet-billing dunning list --status needs_review`, then `mark-sent` or "
            "`requeue` each."
        )
    if facts.quarantined:
        steps.append(
            f"{_count(facts.quarantined, 'Stripe event')} in quarantine: "
            "`cloudgreet-billing quarantine list`, then `retry` or `dismiss` each."
        )
    failed_actions = [a for a in facts.actions if a.outcome in ("failed", "unavailable")]
    if failed_actions:
        steps.append(
            f"{_count(len(failed_actions), 'action')} failed in the window: check each below "
            "and repeat it once the cause is fixed."
        )
    if not steps:
        steps.append("Nothing is left open: close the incident.")
    return steps


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


# --- writing it out ---------------------------------------------------------------


class _Syntax:
    """How one output format quotes text from outside and marks code."""

    def text(self, value: str) -> str:
        raise NotImplementedError

    def code(self, value: str) -> str:
        raise NotImplementedError

    def bold(self, value: str) -> str:
        raise NotImplementedError

    def heading(self, value: str, level: int) -> str:
        raise NotImplementedError


class _Markdown(_Syntax):
    # CommonMark's ASCII punctuation may be backslash-escaped (spec 2.4); escaping the
    # ones that start emphasis, links, code, HTML and lists keeps a Stripe message inert.
    _SPECIAL = re.compile(r"([\\`*_\[\]<>#|~!])")

    def text(self, value: str) -> str:
        return self._SPECIAL.sub(r"\\\1", _one_line(value))

    def code(self, value: str) -> str:
        return f"`{_one_line(value).replace('`', '')}`"

    def bold(self, value: str) -> str:
        return f"**{value}**"

    def heading(self, value: str, level: int) -> str:
        return f"{'#' * level} {value}"


class _Slack(_Syntax):
    # Slack asks for exactly these three to be escaped in text, so that `<!channel>` or
    # a `<url|label>` written by someone else stays text
    # (https://api.slack.com/reference/surfaces/formatting#escaping).
    def text(self, value: str) -> str:
        return _one_line(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def code(self, value: str) -> str:
        return f"`{self.text(value).replace('`', '')}`"

    def bold(self, value: str) -> str:
        return f"*{value}*"

    def heading(self, value: str, level: int) -> str:
        return f"*{value}*"


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _alert_line(alert: Alert, s: _Syntax) -> str:
    parts = [s.code(alert.type)]
    if alert.invoice_id:
        parts.append(s.code(alert.invoice_id))
    if alert.customer_id:
        parts.append(f"customer {s.code(alert.customer_id)}")
    if alert.amount_due is not None and alert.currency:
        parts.append(s.text(format_money(alert.amount_due, alert.currency)))
    if alert.attempt_count:
        parts.append(_count(alert.attempt_count, "attempt"))
    line = ", ".join(parts)
    if alert.last_failure:
        line += f": {s.text(alert.last_failure)}"
    if alert.resolved_at is not None:
        line += f" (resolved {_when(alert.resolved_at)}"
        line += f": {s.text(alert.resolution)})" if alert.resolution else ")"
    return line


#: Audit details worth a word in the summary, besides the amount.
_DETAIL_KEYS = ("resolution", "error", "was", "reason")


def _action_line(action: Action, s: _Syntax) -> str:
    line = (
        f"{_when(action.at)} {s.code(action.actor)} {s.code(action.action)} "
        f"{s.code(action.target)}: {s.bold(s.text(action.outcome))}"
    )
    details = action.details
    if details.get("dry_run"):
        line += " (dry run)"
    amount, currency = details.get("amount"), details.get("currency")
    if isinstance(amount, int) and not isinstance(amount, bool) and isinstance(currency, str):
        line += f", {s.text(format_money(amount, currency))}"
    for key in _DETAIL_KEYS:
        value = details.get(key)
        if isinstance(value, str) and value:
            line += f", {key} {s.text(value[:200])}"
    return line


def _section(
    title: str, lines: Sequence[str], s: _Syntax, *, empty: str, cap: int | None
) -> list[str]:
    out = ["", s.heading(title, 2)]
    if not lines:
        return [*out, empty]
    shown = lines if cap is None else lines[:cap]
    out += [f"- {line}" for line in shown]
    if len(shown) < len(lines):
        out.append(
            f"- … and {len(lines) - len(shown):,} more (`cloudgreet-billing incident summary`)"
        )
    return out


def _render(summary: IncidentSummary, s: _Syntax, *, cap: int | None) -> list[str]:
    f = summary.facts
    lines = [
        s.heading("Billing incident summary", 1),
        f"Window: {_when(f.since)} to {_when(f.until)}"
        + (f" · Stripe {f.mode} mode" if f.mode else ""),
    ]
    lines += _section(
        "What failed",
        [_alert_line(a, s) for a in f.failed],
        s,
        empty="No new alerts in the window.",
        cap=cap,
    )
    action_lines = [_action_line(a, s) for a in f.actions]
    if f.routine:
        action_lines.append(
            "Routine: "
            + ", ".join(f"{_count(n, s.code(k) + ' line')}" for k, n in f.routine.items())
        )
    lines += _section("Actions", action_lines, s, empty="No actions in the window.", cap=cap)
    if f.pause.paused:
        who = s.code(f.pause.actor or "unknown")
        pause = f"Paused since {s.text(f.pause.at or 'unknown')} by {who}" + (
            f": {s.text(f.pause.reason)}" if f.pause.reason else ""
        )
    else:
        pause = "Running (not paused)."
    lines += ["", s.heading("Dunning", 2), pause]
    lines += _section(
        "Still open",
        [_alert_line(a, s) for a in f.still_open],
        s,
        empty="No open alerts.",
        cap=cap,
    )
    if f.resolved:
        lines += _section(
            "Resolved in the window",
            [_alert_line(a, s) for a in f.resolved],
            s,
            empty="",
            cap=cap,
        )
    lines += ["", s.heading("Next steps", 2)]
    lines += [f"{n}. {step}" for n, step in enumerate(summary.next_steps, start=1)]
    return lines


def to_markdown(summary: IncidentSummary) -> str:
    """The whole summary for the incident document; nothing is left out."""
    return "\n".join(_render(summary, _Markdown(), cap=None)) + "\n"


def to_slack(summary: IncidentSummary, handle: str) -> str:
    """The Slack post: the handle first, so ``billing_ops`` is notified, then the summary
    with each list cut at ``SLACK_ITEMS`` lines."""
    body = "\n".join(_render(summary, _Slack(), cap=SLACK_ITEMS))
    return f"{handle} {body}"
