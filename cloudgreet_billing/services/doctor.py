"""Health checks for ``doctor``: one result per part, and never a crash.

A part that is simply not configured is reported as such and is not a failure; a part
configured wrongly is. Later work adds checks by appending to ``CHECKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
from cloudgreet_billing.config import Settings, load_settings, scrub_secrets
from cloudgreet_billing.domain.words import plural
from cloudgreet_billing.errors import BillingError, ExitCode

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol import Store

CheckStatus = Literal["ok", "not_configured", "warn", "fail"]

#: Seconds the delivery checks wait for an SMTP server or Twilio: a server that does not
#: answer fails its check quickly instead of holding ``doctor`` for the senders' own,
#: longer timeouts.
DELIVERY_CHECK_TIMEOUT = 10.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: CheckStatus
    detail: str


@dataclass
class Diagnosis:
    """What the checks found, shared between them (a later check may need the store)."""

    settings: Settings | None = None
    #: Why the store did not answer, when it did not: the checks that read it then say
    #: so at once rather than wait out the client's retries once more each.
    store_unreachable: str | None = None


Check = Callable[[Diagnosis], CheckResult]


def check_configuration(diagnosis: Diagnosis) -> CheckResult:
    try:
        diagnosis.settings = load_settings()
    except BillingError as error:
        detail = error.message + (f" ({error.hint})" if error.hint else "")
        return CheckResult("configuration", "fail", detail)
    shown = diagnosis.settings.describe()
    return CheckResult("configuration", "ok", f"{len(shown)} variables set")


def check_store(diagnosis: Diagnosis) -> CheckResult:
    """Reachable, its schema, and that it can be written. A SQLite store that does not
    exist yet, or has no schema, is new: the first command sets it up, as every command
    does, so it is not a failure."""
    settings = diagnosis.settings
    if settings is None:
        return CheckResult("store", "fail", "skipped: the configuration does not load")
    from cloudgreet_billing.bootstrap import open_store

    if settings.store_kind == "sqlite" and not settings.sqlite_path.exists():
        return _new_sqlite_store(settings)
    try:
        store = open_store(settings, check_schema=False)
    except BillingError as error:
        return CheckResult("store", "fail", _said(error))
    try:
        if settings.store_kind == "supabase":
            return _check_rest_store(store, settings)
        return _check_open_store(store)
    except BillingError as error:
        if error.exit_code == ExitCode.UNAVAILABLE:
            diagnosis.store_unreachable = error.message
        return CheckResult("store", "fail", f"{store.backend} {store.location}: {_said(error)}")
    finally:
        store.close()


def _check_rest_store(store: Store, settings: Settings) -> CheckResult:
    """The Supabase REST store: the project, the key's kind (never the key), the schema
    and the API functions with their version, writability, and one request's round trip."""
    from cloudgreet_billing.adapters.store.supabase.base import SupabaseBase
    from cloudgreet_billing.adapters.store.supabase.errors import API_MIGRATION, MIGRATE_HINT

    assert isinstance(store, SupabaseBase)
    where = (
        f"supabase {store.location} ({settings.supabase_key_kind} key from "
        f"{settings.supabase_key_variable})"
    )
    version = store.schema_version()
    if version is None:
        return CheckResult("store", "fail", f"{where}: schema not installed ({MIGRATE_HINT})")
    if version < LATEST_SCHEMA_VERSION:
        return CheckResult(
            "store",
            "fail",
            f"{where}: schema version {version}, needs {LATEST_SCHEMA_VERSION} ({MIGRATE_HINT})",
        )
    health = store.api_health()
    missing = health.missing_functions
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        return CheckResult(
            "store",
            "fail",
            f"{where}: schema version {version}, but {plural(len(missing), 'API function')} "
            f"of {API_MIGRATION} missing ({shown}): apply migration {API_MIGRATION} again "
            f"({MIGRATE_HINT})",
        )
    store.check_writable()
    return CheckResult(
        "store",
        "ok",
        f"{where}: schema version {version}, {health.functions} API functions "
        f"({API_MIGRATION}), writable; round trip {health.round_trip_ms:.0f} ms",
    )


def _check_open_store(store: Store) -> CheckResult:
    where = f"{store.backend} {store.location}"
    version = store.schema_version()
    embedded = store.backend == "sqlite"
    if embedded and (version or 0) < LATEST_SCHEMA_VERSION:
        from cloudgreet_billing.adapters.store.sqlite import unwritable

        problem = unwritable(Path(store.location))
        if problem is not None:
            return CheckResult("store", "fail", _said(problem))
        if version is None:
            return CheckResult(
                "store",
                "ok",
                f"{where}: a new, empty store, writable; the first command installs "
                f"schema version {LATEST_SCHEMA_VERSION}",
            )
        return CheckResult(
            "store",
            "ok",
            f"{where}: schema version {version}, writable; the next command upgrades it "
            f"to {LATEST_SCHEMA_VERSION}",
        )
    if version is None:
        return CheckResult(
            "store", "fail", f"{where}: schema not installed (run: cloudgreet-billing db migrate)"
        )
    if version < LATEST_SCHEMA_VERSION:
        return CheckResult(
            "store",
            "fail",
            f"{where}: schema version {version}, needs {LATEST_SCHEMA_VERSION} (run db migrate)",
        )
    try:
        store.check_writable()
    except Exception as exc:
        known = store.explain_failure(exc)
        if known is None:
            raise
        status: CheckStatus = "warn" if known.exit_code == ExitCode.UNAVAILABLE else "fail"
        return CheckResult("store", status, f"{where}, schema version {version}: {_said(known)}")
    return CheckResult("store", "ok", f"{where}, schema version {version}, writable")


def _new_sqlite_store(settings: Settings) -> CheckResult:
    """A SQLite store whose file does not exist yet: can the first command create it?"""
    import os

    from cloudgreet_billing.adapters.store.sqlite import unwritable

    path = Path(os.path.normpath(settings.sqlite_path.absolute()))
    folder = path.parent
    if settings.database_url is not None and not folder.is_dir():
        return CheckResult(
            "store",
            "fail",
            f"sqlite {path}: its folder {folder} does not exist "
            f"(create it with mkdir -p {folder}, or fix BILLING_DATABASE_URL)",
        )
    # The default location's folder is made on first use: the nearest one that exists
    # is where it will be made.
    existing = next(parent for parent in path.parents if parent.is_dir())
    problem = unwritable(existing / path.name)
    if problem is not None:
        return CheckResult("store", "fail", _said(problem))
    return CheckResult(
        "store",
        "ok",
        f"sqlite {path}: a new store, not created yet; the first command creates it "
        f"with schema version {LATEST_SCHEMA_VERSION}",
    )


def _said(error: BillingError) -> str:
    return error.message + (f" ({error.hint})" if error.hint else "")


def check_stripe(diagnosis: Diagnosis) -> CheckResult:
    """The key's mode, whether Stripe answers with it, and whose account it opens."""
    settings = diagnosis.settings
    if settings is None or not settings.stripe_secret_key:
        return CheckResult("stripe", "not_configured", "STRIPE_SECRET_KEY is not set")
    from cloudgreet_billing.bootstrap import open_gateway
    from cloudgreet_billing.config import redact
    from cloudgreet_billing.services.actions.common import account_name

    key = f"{settings.stripe_mode} mode key {redact(settings.stripe_secret_key)}"
    try:
        account = open_gateway(settings).retrieve_account()
    except BillingError as error:
        if error.code == "stripe_permission":
            return CheckResult("stripe", "warn", f"{key}: reachable, but may not read the account")
        return CheckResult("stripe", "fail", f"{key}: {error.message}")
    name = account_name(account)
    shown = f"account {account.get('id')}" + (f" ({name})" if name else "")
    return CheckResult("stripe", "ok", f"{key}, {shown}")


def check_email(diagnosis: Diagnosis) -> CheckResult:
    settings = diagnosis.settings
    if settings is None:
        return CheckResult("email", "fail", "skipped: the configuration does not load")
    backend = settings.email_backend
    missing = []
    if backend == "smtp":
        missing = [
            name
            for name, value in (
                ("SMTP_URL", settings.smtp_url),
                ("EMAIL_FROM", settings.email_from),
            )
            if not value
        ]
    elif backend == "file" and not settings.outbox_dir:
        missing = ["BILLING_OUTBOX_DIR"]
    if missing:
        return CheckResult("email", "fail", f"{backend} backend needs {', '.join(missing)}")
    if backend == "smtp":
        return _verify_smtp(settings)
    return CheckResult("email", "ok", f"{backend} backend")


#: What to look at, by where the SMTP check stopped.
_SMTP_HINTS = {
    "connect": "check SMTP_URL's host, port and scheme (smtp:// STARTTLS, smtps:// TLS)",
    "login": "check SMTP_URL's user and password",
    "sender": "check EMAIL_FROM, and whether the server needs a user and password in SMTP_URL",
}


def _verify_smtp(settings: Settings) -> CheckResult:
    """Connect and log in as sending would, then QUIT: a wrong password shows here, not
    at the first ``dunning run``."""
    from cloudgreet_billing.adapters.notify.email_smtp import SmtpCheckError
    from cloudgreet_billing.bootstrap import open_smtp_sender

    sender = open_smtp_sender(settings, timeout=DELIVERY_CHECK_TIMEOUT)
    try:
        proven = sender.verify()
    except SmtpCheckError as error:
        detail = f"smtp backend: {error}; {_SMTP_HINTS[error.stage]}"
        return CheckResult("email", "fail", scrub_secrets(detail))
    return CheckResult("email", "ok", f"smtp backend, {proven}")


def check_sms(diagnosis: Diagnosis) -> CheckResult:
    settings = diagnosis.settings
    if settings is None:
        return CheckResult("sms", "fail", "skipped: the configuration does not load")
    backend = settings.sms_backend
    missing = []
    if backend == "twilio":
        missing = [
            name
            for name, value in (
                ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                ("TWILIO_FROM", settings.twilio_from),
            )
            if not value
        ]
    elif backend == "file" and not settings.outbox_dir:
        missing = ["BILLING_OUTBOX_DIR"]
    if missing:
        return CheckResult("sms", "fail", f"{backend} backend needs {', '.join(missing)}")
    if backend == "twilio":
        return _verify_twilio(settings)
    return CheckResult("sms", "ok", f"{backend} backend")


def _verify_twilio(settings: Settings) -> CheckResult:
    """Read the Twilio account with the configured SID and token; send nothing."""
    from cloudgreet_billing.adapters.notify.sms_twilio import TwilioAccountError
    from cloudgreet_billing.bootstrap import open_twilio_sender

    sender = open_twilio_sender(settings, timeout=DELIVERY_CHECK_TIMEOUT)
    try:
        account = sender.verify()
    except TwilioAccountError as error:
        if error.http_status is None:
            hint = "check this machine's network access to Twilio"
        elif error.http_status in (401, 403, 404):
            hint = "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        else:
            hint = "Twilio may be having trouble; try again later"
        detail = f"twilio backend: {error}; {hint}"
        return CheckResult("sms", "fail", scrub_secrets(detail))
    about = ", ".join(part for part in (account.friendly_name, account.status) if part)
    shown = f"twilio backend, account {account.sid} ({about})"
    if account.status != "active":
        return CheckResult(
            "sms", "fail", f"{shown}: a {account.status} account cannot send; see Twilio's console"
        )
    if account.type == "Trial":
        return CheckResult("sms", "warn", f"{shown}: a trial account texts only verified numbers")
    return CheckResult("sms", "ok", shown)


def check_slack(diagnosis: Diagnosis) -> CheckResult:
    settings = diagnosis.settings
    if settings is None or not settings.slack_webhook_url:
        return CheckResult("slack", "not_configured", "SLACK_WEBHOOK_URL is not set")
    return CheckResult("slack", "ok", "incoming webhook set")


def check_dunning_templates(diagnosis: Diagnosis) -> CheckResult:
    """The timeline loads and every template renders with every value a message can have."""
    settings = diagnosis.settings
    if settings is None:
        return CheckResult("dunning templates", "fail", "skipped: the configuration does not load")
    from cloudgreet_billing.domain.dunning import load_dunning_config
    from cloudgreet_billing.services.dunning.messages import (
        MessageBook,
        MessageError,
        sample_context,
    )

    try:
        config = load_dunning_config(settings.config_path)
    except BillingError as error:
        return CheckResult("dunning templates", "fail", error.message)
    book = MessageBook(config.templates_dir)
    problems: list[str] = []
    uses = [(step.template, step.channel) for step in config.timeline]
    uses += [("escalation_email", "email"), ("escalation_slack", "sms")]
    for template, channel in uses:
        try:
            book.render(template, channel, sample_context())
        except MessageError as exc:
            problems.append(str(exc))
    if problems:
        return CheckResult("dunning templates", "fail", "; ".join(problems))
    days = ", ".join(f"day {step.day} {step.channel}" for step in config.timeline)
    return CheckResult(
        "dunning templates", "ok", f"{days}; escalate after {config.escalate_after} steps"
    )


def _with_store(
    diagnosis: Diagnosis, name: str, read: Callable[[Store], CheckResult]
) -> CheckResult:
    """``read(store)`` on the configured store, or why the check could not look: the
    store's own check (``check_store``) has already said what is wrong with it."""
    settings = diagnosis.settings
    if settings is None:
        return CheckResult(name, "fail", "skipped: the configuration does not load")
    from cloudgreet_billing.bootstrap import open_store

    not_ready = CheckResult(name, "fail", "skipped: the store is not ready (see store)")
    if diagnosis.store_unreachable is not None:
        return not_ready
    new = CheckResult(name, "ok", "a new store: nothing to look at yet")
    if settings.store_kind == "sqlite" and not settings.sqlite_path.exists():
        # Opening would create it; ``check_store`` says whether it can be.
        return new
    try:
        store = open_store(settings, check_schema=False)
    except BillingError:
        return not_ready
    try:
        version = store.schema_version()
        if store.backend == "sqlite" and version is None:
            return new
        if (version or 0) < LATEST_SCHEMA_VERSION:
            return not_ready
        return read(store)
    finally:
        store.close()


def check_dunning_state(diagnosis: Diagnosis) -> CheckResult:
    """Paused, or steps waiting for a human: worth a look, not a failure."""
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.services.dunning.operator import pause_state

    def read(store: Store) -> CheckResult:
        pause = pause_state(store)
        if pause.paused:
            return CheckResult(
                "dunning", "warn", f"paused by {pause.actor} at {pause.at}: {pause.reason}"
            )
        review = store.list_steps(statuses=("needs_review", "failed"), limit=None)
        if review:
            stuck = sum(step.status == "needs_review" for step in review)
            return CheckResult(
                "dunning",
                "warn",
                f"{plural(stuck, 'step')} {'needs' if stuck == 1 else 'need'} review and "
                f"{len(review) - stuck} failed (see: dunning list)",
            )
        return CheckResult(
            "dunning", "ok", f"running; {plural(store.count_due_steps(utcnow()), 'step')} due now"
        )

    return _with_store(diagnosis, "dunning", read)


def check_quarantine(diagnosis: Diagnosis) -> CheckResult:
    """Stripe events that could not be applied wait for a person: worth a look."""

    def read(store: Store) -> CheckResult:
        waiting = store.count_quarantined()
        if not waiting:
            return CheckResult("quarantine", "ok", "no Stripe events in quarantine")
        oldest = store.list_quarantined(limit=1)
        since = oldest[0].first_seen_at.strftime("%Y-%m-%d %H:%M UTC") if oldest else "?"
        return CheckResult(
            "quarantine",
            "warn",
            f"{plural(waiting, 'Stripe event')} could not be applied (oldest since {since}): see "
            "`quarantine list`, then `quarantine retry ID` after a fix or `quarantine dismiss ID`",
        )

    return _with_store(diagnosis, "quarantine", read)


def check_dunning_contacts(diagnosis: Diagnosis) -> CheckResult:
    """Unpaid invoices in dunning that no channel can reach: worth a look, not a failure."""
    from cloudgreet_billing.services.dunning.reach import unreachable_invoices

    def read(store: Store) -> CheckResult:
        unreachable = unreachable_invoices(store)
        if not unreachable:
            return CheckResult(
                "dunning contacts", "ok", "every unpaid invoice in dunning has a contact"
            )
        shown = ", ".join(reach.facts.invoice_id for reach in unreachable[:3])
        more = f" and {len(unreachable) - 3} more" if len(unreachable) > 3 else ""
        return CheckResult(
            "dunning contacts",
            "warn",
            f"{plural(len(unreachable), 'unpaid invoice')} cannot be reached by any channel "
            f"({shown}{more}); see: alerts list --type dunning_undeliverable",
        )

    return _with_store(diagnosis, "dunning contacts", read)


def check_escalation(diagnosis: Diagnosis) -> CheckResult:
    settings = diagnosis.settings
    if settings is None or not settings.finance_lead_email:
        return CheckResult(
            "escalation", "not_configured", "FINANCE_LEAD_EMAIL is not set (Slack only)"
        )
    return CheckResult("escalation", "ok", f"emails {settings.finance_lead_email}")


CHECKS: list[Check] = [
    check_configuration,
    check_store,
    check_stripe,
    check_email,
    check_sms,
    check_slack,
    check_dunning_templates,
    check_dunning_state,
    check_quarantine,
    check_dunning_contacts,
    check_escalation,
]


def run_checks() -> list[CheckResult]:
    diagnosis = Diagnosis()
    return [_guarded(check, diagnosis) for check in CHECKS]


def _guarded(check: Check, diagnosis: Diagnosis) -> CheckResult:
    """A check that breaks is a failed check, never a crash of ``doctor``."""
    try:
        return check(diagnosis)
    except BillingError as error:
        return CheckResult(_name_of(check), "fail", error.message)
    except Exception as exc:
        detail = f"unexpected {type(exc).__name__}: {scrub_secrets(str(exc))}"
        return CheckResult(_name_of(check), "fail", detail)


def _name_of(check: Check) -> str:
    return getattr(check, "__name__", "check").removeprefix("check_")
