"""Builds the adapters a command needs from ``Settings``; the only place that chooses them.

Adapters import their drivers (psycopg, stripe, supabase) lazily, here, so commands that
do not need them start fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
from cloudgreet_billing.errors import StoreError

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.deadline import SlowStripe
    from cloudgreet_billing.adapters.notify.email_smtp import SmtpEmailSender
    from cloudgreet_billing.adapters.notify.protocol import ChatPoster, EmailSender, SmsSender
    from cloudgreet_billing.adapters.notify.sms_twilio import TwilioSmsSender
    from cloudgreet_billing.adapters.payments import PaymentGateway
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.config import Settings


def open_store(settings: Settings, *, check_schema: bool = True) -> Store:
    """Open the store the settings select.

    The embedded SQLite store installs or upgrades its own schema, so that a newcomer can
    try everything at once. A shared PostgreSQL store is only ever migrated by
    ``db migrate``: several workers may point at it, and schema changes are deliberate.
    """
    kind = settings.store_kind
    store: Store
    if kind == "supabase":
        # Through the project's REST API: its schema is applied by hand (db migrate prints
        # the route), so it is checked below like PostgreSQL's, never migrated.
        from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore

        assert settings.supabase_url is not None and settings.supabase_key is not None
        store = SupabaseStore(settings.supabase_url, settings.supabase_key)
    elif kind == "postgres":
        from cloudgreet_billing.adapters.store.postgres import PostgresStore

        assert settings.database_url is not None
        store = PostgresStore(settings.database_url)
    else:
        from cloudgreet_billing.adapters.store.sqlite import SqliteStore

        # The folder is made only for the default location; a folder named in
        # BILLING_DATABASE_URL must exist, so that a typo cannot start a new store.
        store = SqliteStore(settings.sqlite_path, create_folder=settings.database_url is None)
    try:
        embedded = kind == "sqlite"
        if check_schema and embedded and (store.schema_version() or 0) < LATEST_SCHEMA_VERSION:
            store.migrate()
        if check_schema:
            require_current_schema(store)
    except Exception as exc:
        known = store.explain_failure(exc)
        store.close()
        if known is not None:
            raise known from exc
        raise
    return store


def store_files_of(settings: Settings) -> list[Path]:
    """The files no command may write over: the SQLite store in use and its ``-wal``,
    ``-shm`` and ``-journal`` files (none for PostgreSQL)."""
    if settings.store_kind != "sqlite":
        return []
    from cloudgreet_billing.adapters.files import store_files

    return store_files(settings.sqlite_path)


def require_current_schema(store: Store) -> None:
    version = store.schema_version()
    if version is None:
        raise StoreError(
            f"the billing schema is not installed in {store.backend} ({store.location})",
            hint="run: cloudgreet-billing db migrate",
        )
    if version < LATEST_SCHEMA_VERSION:
        raise StoreError(
            f"the billing schema is at version {version}; this toolkit needs "
            f"{LATEST_SCHEMA_VERSION}",
            hint="run: cloudgreet-billing db migrate",
        )


def open_gateway(
    settings: Settings,
    *,
    batch: bool = False,
    on_slow: Callable[[SlowStripe], None] | None = None,
    pages_per_second: float | None = None,
) -> PaymentGateway:
    """The Stripe gateway for ``STRIPE_SECRET_KEY`` (and ``STRIPE_API_BASE`` when set),
    with the command's deadline: ``STRIPE_TIMEOUT_SECONDS``, or for the paging commands
    (``batch``: sync, reconcile) ``STRIPE_BATCH_TIMEOUT_SECONDS``. ``on_slow`` hears once
    when a request keeps the command waiting."""
    settings.require("STRIPE_SECRET_KEY")
    from cloudgreet_billing.adapters.deadline import StripeDeadline
    from cloudgreet_billing.adapters.stripe import StripeGateway

    assert settings.stripe_secret_key is not None
    deadline = (
        StripeDeadline(
            settings.stripe_batch_timeout, setting="STRIPE_BATCH_TIMEOUT_SECONDS", on_slow=on_slow
        )
        if batch
        else StripeDeadline(settings.stripe_timeout, on_slow=on_slow)
    )
    return StripeGateway(
        settings.stripe_secret_key,
        api_base=settings.stripe_api_base,
        deadline=deadline,
        pages_per_second=pages_per_second,
    )


# --- delivery (dunning, escalations) ------------------------------------------------

DEFAULT_EMAIL_FROM = "CloudGreet Billing <billing@localhost>"


def open_email_sender(settings: Settings) -> EmailSender:
    """The email backend ``BILLING_EMAIL_BACKEND`` names, with what it needs checked."""
    backend = settings.email_backend
    if backend == "smtp":
        return open_smtp_sender(settings)
    if backend == "file":
        settings.require("BILLING_OUTBOX_DIR")
        from cloudgreet_billing.adapters.notify.email_file import FileEmailSender

        assert settings.outbox_dir is not None
        return FileEmailSender(settings.outbox_dir, settings.email_from or DEFAULT_EMAIL_FROM)
    from cloudgreet_billing.adapters.notify.email_console import ConsoleEmailSender

    return ConsoleEmailSender(sender=settings.email_from or DEFAULT_EMAIL_FROM)


def open_sms_sender(settings: Settings) -> SmsSender:
    """The SMS backend ``BILLING_SMS_BACKEND`` names, with what it needs checked."""
    backend = settings.sms_backend
    if backend == "twilio":
        return open_twilio_sender(settings)
    if backend == "file":
        settings.require("BILLING_OUTBOX_DIR")
        from cloudgreet_billing.adapters.notify.sms_file import FileSmsSender

        assert settings.outbox_dir is not None
        return FileSmsSender(settings.outbox_dir, settings.twilio_from)
    from cloudgreet_billing.adapters.notify.sms_console import ConsoleSmsSender

    return ConsoleSmsSender()


def open_smtp_sender(settings: Settings, *, timeout: float | None = None) -> SmtpEmailSender:
    """The SMTP sender for ``SMTP_URL`` and ``EMAIL_FROM`` (``timeout``: the adapter's own
    default unless given; ``doctor`` gives a short one)."""
    settings.require("SMTP_URL", "EMAIL_FROM")
    from cloudgreet_billing.adapters.notify.email_smtp import SmtpEmailSender

    assert settings.smtp_url is not None and settings.email_from is not None
    if timeout is None:
        return SmtpEmailSender(settings.smtp_url, settings.email_from)
    return SmtpEmailSender(settings.smtp_url, settings.email_from, timeout=timeout)


def open_twilio_sender(settings: Settings, *, timeout: float | None = None) -> TwilioSmsSender:
    """The Twilio sender for ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and
    ``TWILIO_FROM`` (``timeout``: the adapter's own default unless given)."""
    settings.require("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM")
    from cloudgreet_billing.adapters.notify.sms_twilio import TwilioSmsSender

    assert settings.twilio_account_sid and settings.twilio_auth_token
    assert settings.twilio_from is not None
    sid, token, sender = (
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        settings.twilio_from,
    )
    if timeout is None:
        return TwilioSmsSender(sid, token, sender)
    return TwilioSmsSender(sid, token, sender, timeout=timeout)


def open_chat(settings: Settings) -> ChatPoster | None:
    """The Slack incoming webhook, or None when ``SLACK_WEBHOOK_URL`` is not set."""
    if not settings.slack_webhook_url:
        return None
    from cloudgreet_billing.adapters.notify.slack import SlackWebhook

    return SlackWebhook(settings.slack_webhook_url)
