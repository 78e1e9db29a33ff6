"""Checks for the arguments and options of every command, run as click parses them.

The rules are ``domain.inputs``'s; here they run while the command line is read, so a bad
value is refused (exit 2, one line naming the option) before a command opens the store or
reaches Stripe. Commands attach them to their options: ``callback=params.customer_id``
hands the command the checked text; ``parser=params.limit`` hands it the number.
``BadInput`` raised here is rendered by ``BillingGroup`` like any other.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from cloudgreet_billing.domain import inputs
from cloudgreet_billing.domain.timefmt import parse_instant
from cloudgreet_billing.errors import BadInput


def _flag(param: typer.CallbackParam) -> str:
    """The option as a user types it (``--occurred-at``), or the argument's name."""
    opts = [opt for opt in param.opts if opt.startswith("--")]
    return opts[0] if opts else (param.name or "value").upper()


def customer_id(param: typer.CallbackParam, value: str | None) -> str | None:
    return None if value is None else inputs.check_stripe_id(value, "cus_", field=_flag(param))


def invoice_id(param: typer.CallbackParam, value: str | None) -> str | None:
    return None if value is None else inputs.check_stripe_id(value, "in_", field=_flag(param))


def instant(param: typer.CallbackParam, value: str | None) -> str | None:
    """An ISO time; an empty one is refused, never taken as "now"."""
    if value is not None:
        parse_instant(value, field=_flag(param))
    return value


def text(param: typer.CallbackParam, value: str | None) -> str | None:
    """Free text (a description, a note, a reason): one line of UTF-8."""
    if value is not None:
        inputs.check_text(value, field=_flag(param))
    return value


def external_id(param: typer.CallbackParam, value: str | None) -> str | None:
    if value is not None:
        inputs.check_text(value, field=_flag(param), max_length=inputs.MAX_EXTERNAL_ID_LENGTH)
    return value


def currency(param: typer.CallbackParam, value: str | None) -> str | None:
    from cloudgreet_billing.domain.money import parse_currency

    if value is not None:
        parse_currency(value)
    return value


def http_url(param: typer.CallbackParam, value: str | None) -> str | None:
    return None if value is None else inputs.check_http_url(value, field=_flag(param))


def alert_id(value: str) -> str:
    """An alert id, as the command's own ``parse_alert_id`` reads it again."""
    from cloudgreet_billing.domain.alerts import parse_alert_id

    return str(parse_alert_id(value))


def alert_ref(value: str) -> str:
    """An alert id, or an invoice id (``in_…``) standing for the invoice's newest alert:
    either is checked here, before the store is opened."""
    from cloudgreet_billing.domain.ledger import check_invoice_id

    if value.strip().startswith("in_"):
        checked = check_invoice_id(value)
        assert checked is not None
        return checked
    return alert_id(value)


def step_id(value: str | int) -> int:
    if isinstance(value, int):
        return value
    return inputs.parse_row_id(
        value, what="a dunning step id", hint="step ids are numbers from 1 up: see dunning list"
    )


def target(prefixes: tuple[str, ...]) -> Callable[[str], str]:
    """An alert id or a Stripe id of a kind in ``prefixes`` (``retry 12``, ``retry in_…``)."""

    def check(value: str) -> str:
        return str(inputs.parse_target(value, prefixes=prefixes))

    return check


def _whole_number(value: str | int, flag: str) -> int:
    if isinstance(value, int):
        return value
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits.lstrip("0")) > 19:
        raise BadInput(
            f"{flag} {inputs.shown(value)} is not a whole number up to 2**63 - 1", code="usage"
        )
    return int(digits)


def limit(value: str | int) -> int:
    """``--limit N``: 1 to 2**63 - 1."""
    return inputs.check_limit(_whole_number(value, "--limit"))


def days(value: str | int) -> int:
    """``--days N``: 1 to a century."""
    return inputs.check_days(_whole_number(value, "--days"))


def quarantine_ref(value: str) -> str:
    """A quarantined event's number or ``evt_…`` id, as ``services.quarantine`` reads it."""
    from cloudgreet_billing.services.quarantine import parse_quarantine_ref

    return str(parse_quarantine_ref(value))


def quarantine_refs(value: list[str] | None) -> list[str] | None:
    return None if value is None else [quarantine_ref(each) for each in value]


def whole_days(value: str | int) -> int:
    """``--days N`` whose range the command checks itself (``sync --verify``)."""
    return _whole_number(value, "--days")


def step_status(value: str | None) -> str | None:
    """``dunning list --status``: a step status, or ``all``."""
    from cloudgreet_billing.domain.statuses import STEP_STATUSES

    if value is not None and value != "all" and value not in STEP_STATUSES:
        raise BadInput(
            f"--status {inputs.shown(value)} is not a step status",
            hint=f"use one of {', '.join(STEP_STATUSES)}, or all",
        )
    return value
