from __future__ import annotations

from pathlib import Path

import pytest

from cloudgreet_billing.config import load_settings, redact, redact_url, variables
from cloudgreet_billing.errors import ConfigError


def test_defaults_with_nothing_set():
    settings = load_settings({})
    assert settings.store_kind == "sqlite"
    assert settings.email_backend == "console"
    assert settings.stripe_mode is None
    assert "@" in settings.actor


def test_store_selection_follows_the_contract():
    assert load_settings({"BILLING_DATABASE_URL": "postgresql://u@h/db"}).store_kind == "postgres"
    assert load_settings({"BILLING_DATABASE_URL": "postgres://u@h/db"}).store_kind == "postgres"
    key = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
    supabase = {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": key}
    assert load_settings(supabase).store_kind == "supabase"
    assert (
        load_settings({**supabase, "BILLING_DATABASE_URL": "sqlite:///a.db"}).store_kind == "sqlite"
    )
    assert (
        load_settings(
            {"NEXT_PUBLIC_SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": key}
        ).store_kind
        == "supabase"
    )


def test_sqlite_urls():
    assert load_settings({"BILLING_DATABASE_URL": "sqlite:///rel.db"}).sqlite_path == Path("rel.db")
    assert load_settings({"BILLING_DATABASE_URL": "sqlite:////abs/x.db"}).sqlite_path == Path(
        "/abs/x.db"
    )
    with pytest.raises(ConfigError):
        load_settings({"BILLING_DATABASE_URL": "sqlite://"})


def test_stripe_mode_from_key_prefix():
    assert load_settings({"STRIPE_SECRET_KEY": "sk_live_abcdefghijkl1234"}).stripe_mode == "live"
    assert load_settings({"STRIPE_SECRET_KEY": "rk_test_abcdefghijkl1234"}).stripe_mode == "test"


def test_app_url_falls_back_to_next_public():
    assert load_settings({"NEXT_PUBLIC_APP_URL": "https://app.example.com/"}).app_url == (
        "https://app.example.com"
    )


def test_webhook_secrets_split_for_rotation():
    settings = load_settings({"STRIPE_WEBHOOK_SECRET": "whsec_old, whsec_new"})
    assert settings.stripe_webhook_secrets == ("whsec_old", "whsec_new")


def test_missing_required_value_names_the_variable():
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY is not set"):
        load_settings({}).require("STRIPE_SECRET_KEY")


def test_missing_config_file():
    with pytest.raises(ConfigError, match="BILLING_CONFIG"):
        load_settings({"BILLING_CONFIG": "/nonexistent.toml"})


def test_redaction_never_reveals_secrets():
    assert redact("sk_live_51Habcdefghijka1b2") == "sk_live_…a1b2"
    assert redact("whsec_short") == "whsec_…"
    assert redact_url("postgresql://user:hunter2@db:5432/x") == "postgresql://user:***@db:5432/x"
    settings = load_settings(
        {
            "STRIPE_SECRET_KEY": "sk_live_51Habcdefghijka1b2",
            "SMTP_URL": "smtp://mailer:hunter2@mail.example.com:587",
            "TWILIO_AUTH_TOKEN": "twiliotoken123456",
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/secretpath",
        }
    )
    shown = repr(settings) + str(settings.describe())
    for secret in ("51Habcdefghijk", "hunter2", "twiliotoken", "secretpath"):
        assert secret not in shown


def test_env_example_documents_every_variable():
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for name in variables():
        assert f"{name}=" in text, name
        line = text[: text.index(f"{name}=")].rstrip().splitlines()[-1]
        assert line.startswith("#"), f"{name} has no comment above it"


def test_libpq_password_parameters_are_redacted_too():
    from cloudgreet_billing.config import scrub_secrets

    url = "postgresql://bob@db.example.com/app?sslmode=require&password=hunter22"
    assert redact_url(url) == "postgresql://bob@db.example.com/app?sslmode=require&password=***"
    env = {"BILLING_DATABASE_URL": url, "SMTP_URL": "smtp://mailer:pa55word@mail:587"}
    scrubbed = scrub_secrets("failed: hunter22 and pa55word at mail", env)
    assert "hunter22" not in scrubbed and "pa55word" not in scrubbed


def test_a_url_password_is_redacted_as_written_and_decoded():
    from cloudgreet_billing.config import scrub_secrets

    env = {"SMTP_URL": "smtp://mailer:hunter2%40x@mail:587"}
    scrubbed = scrub_secrets("login as mailer with hunter2@x (hunter2%40x) refused", env)
    assert "hunter2@x" not in scrubbed and "hunter2%40x" not in scrubbed


def test_stripe_deadlines_default_to_20_and_300_seconds_and_accept_fractions():
    assert (load_settings({}).stripe_timeout, load_settings({}).stripe_batch_timeout) == (20, 300)
    settings = load_settings(
        {"STRIPE_TIMEOUT_SECONDS": "2.5", "STRIPE_BATCH_TIMEOUT_SECONDS": " 600 "}
    )
    assert (settings.stripe_timeout, settings.stripe_batch_timeout) == (2.5, 600)
    assert settings.describe()["STRIPE_TIMEOUT_SECONDS"] == "2.5"
    assert "STRIPE_TIMEOUT_SECONDS" not in load_settings({}).describe()  # a default is not "set"


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "1e9", "20s"])
def test_a_stripe_deadline_must_be_a_sane_number_of_seconds(value):
    with pytest.raises(ConfigError) as caught:
        load_settings({"STRIPE_TIMEOUT_SECONDS": value})
    assert caught.value.message == (
        f"STRIPE_TIMEOUT_SECONDS must be a number of seconds above 0, not {value!r}"
    )
    assert caught.value.exit_code == 2


def test_the_retry_race_window_defaults_to_six_hours_and_takes_hours_or_minutes():
    from datetime import timedelta

    assert load_settings({}).retry_race_window == timedelta(hours=6)
    assert load_settings({"BILLING_RETRY_RACE_WINDOW": "2h"}).retry_race_window == timedelta(
        hours=2
    )
    window = load_settings({"BILLING_RETRY_RACE_WINDOW": "90m"})
    assert window.retry_race_window == timedelta(minutes=90)
    assert window.describe()["BILLING_RETRY_RACE_WINDOW"] == "90m"
    assert "BILLING_RETRY_RACE_WINDOW" not in load_settings({}).describe()
    assert load_settings({"BILLING_RETRY_RACE_WINDOW": "0"}).retry_race_window == timedelta(0)


@pytest.mark.parametrize("value", ["6", "1.5h", "-1h", "169h", "six hours"])
def test_a_retry_race_window_needs_a_unit_and_at_most_a_week(value):
    with pytest.raises(ConfigError) as refused:
        load_settings({"BILLING_RETRY_RACE_WINDOW": value})
    assert refused.value.message == (
        f"BILLING_RETRY_RACE_WINDOW must be hours or minutes such as 6h or 90m, not {value!r}"
    )
    assert "168h" in (refused.value.hint or "")
