"""Message copy: Jinja templates that fail loudly on a missing value, never send a blank.

Templates are ``<name>.txt`` files, looked up first in ``[dunning] templates_dir`` of
``BILLING_CONFIG`` and then in the packaged defaults (``cloudgreet_billing/templates/dunning``).
An email template starts with a ``Subject:`` line and a blank line; an SMS template is the
body alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from cloudgreet_billing.domain.declines import classify_decline
from cloudgreet_billing.domain.dunning import DunningStep, InvoiceFacts
from cloudgreet_billing.domain.money import format_money
from cloudgreet_billing.domain.timefmt import human_time

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "dunning"
#: Twilio refuses longer bodies.
MAX_SMS_LENGTH = 1600


class MessageError(Exception):
    """A template is missing, malformed, or names a value the message does not have."""


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    channel: str
    subject: str | None
    body: str


class MessageBook:
    """Compiled templates, one environment per run."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        search = [str(templates_dir)] if templates_dir else []
        search.append(str(DEFAULT_TEMPLATES))
        # Plain text for email bodies and SMS: HTML escaping would corrupt the copy.
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701
            keep_trailing_newline=False,
        )
        self._compiled: dict[str, jinja2.Template] = {}

    def _template(self, name: str) -> jinja2.Template:
        template = self._compiled.get(name)
        if template is None:
            try:
                template = self._env.get_template(f"{name}.txt")
            except jinja2.TemplateNotFound:
                raise MessageError(f"template {name!r} not found ({name}.txt)") from None
            except jinja2.TemplateSyntaxError as exc:
                raise MessageError(
                    f"template {name!r} has a syntax error on line {exc.lineno}: {exc.message}"
                ) from None
            self._compiled[name] = template
        return template

    def render(self, name: str, channel: str, context: Mapping[str, Any]) -> RenderedMessage:
        try:
            text = self._template(name).render(context)
        except jinja2.UndefinedError as exc:
            raise MessageError(f"template {name!r}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise MessageError(f"template {name!r}: {exc}") from None
        if channel == "sms":
            body = text.strip()
            if not body:
                raise MessageError(f"template {name!r} renders an empty SMS")
            if len(body) > MAX_SMS_LENGTH:
                raise MessageError(
                    f"template {name!r} renders {len(body)} characters; SMS allow {MAX_SMS_LENGTH}"
                )
            return RenderedMessage("sms", None, body)
        head, _, body = text.partition("\n")
        if not head.startswith("Subject:") or not head[8:].strip():
            raise MessageError(f"email template {name!r} must start with a 'Subject: …' line")
        if not body.strip():
            raise MessageError(f"email template {name!r} renders an empty body")
        return RenderedMessage("email", head[8:].strip(), body.strip("\n") + "\n")

    def check(self, names: Iterable[str]) -> list[str]:
        """Problems loading these templates (missing files, syntax errors)."""
        problems: list[str] = []
        for name in dict.fromkeys(names):
            try:
                self._template(name)
            except MessageError as exc:
                problems.append(str(exc))
        return problems


def step_context(
    step: DunningStep,
    invoice: InvoiceFacts,
    *,
    now: datetime | None = None,
    portal_url: str | None = None,
) -> dict[str, Any]:
    """What a step's template may name. Values the mirror lacks are left out, so a
    template that needs them fails instead of printing a blank.

    ``decline_class`` (``hard``, ``soft`` or ``unknown``, ``domain.declines``) picks the
    copy: a hard decline asks for a new card (``portal_url``, else the pay page); a soft
    one says when Stripe tries again (``next_attempt``, given only while it is after
    ``now``); an unknown one keeps the general copy.
    """
    context: dict[str, Any] = {
        "invoice_id": step.invoice_id,
        "customer_id": step.customer_id,
        "day": step.day,
        "channel": step.channel,
        "decline_class": classify_decline(invoice.decline_code, invoice.advice_code),
    }
    retry_at = invoice.next_payment_attempt
    upcoming = retry_at is not None and (now is None or retry_at > now)
    # What is still owed; a partly paid invoice asks only for the rest.
    owed = invoice.amount_remaining if invoice.amount_remaining is not None else invoice.amount_due
    optional = {
        "customer_name": invoice.customer_name,
        "customer_email": invoice.email,
        "customer_phone": invoice.phone,
        "invoice_number": invoice.number,
        "pay_url": invoice.hosted_invoice_url,
        "currency": invoice.currency,
        "amount_due_minor": owed,
        "amount_due": (
            format_money(owed, invoice.currency) if owed is not None and invoice.currency else None
        ),
        "first_failed_on": (
            invoice.first_failed_at.date().isoformat() if invoice.first_failed_at else None
        ),
        "decline_code": invoice.decline_code,
        "next_attempt": human_time(retry_at) if retry_at is not None and upcoming else None,
        "portal_url": portal_url,
    }
    context.update({key: value for key, value in optional.items() if value is not None})
    return context


def sample_context() -> dict[str, Any]:
    """A complete, made-up context for checking templates (``doctor``)."""
    return {
        "invoice_id": "in_SAMPLE",
        "customer_id": "cus_SAMPLE",
        "day": 0,
        "channel": "email",
        "customer_name": "Sample Customer",
        "customer_email": "billing@example.com",
        "customer_phone": "+15550100",
        "invoice_number": "SAMPLE-0001",
        "pay_url": "https://invoice.stripe.com/i/sample",
        "currency": "usd",
        "amount_due_minor": 12345,
        "amount_due": format_money(12345, "usd"),
        "first_failed_on": "2026-01-01",
        "decline_class": "unknown",
        "decline_code": "insufficient_funds",
        "next_attempt": "2026-01-03 09:00 UTC",
        "portal_url": "https://billing.stripe.com/p/login/sample",
        "completed": 3,
        "alert_id": 1,
    }
