"""Supabase configuration: which key is which, which are refused, and that none is shown."""

from __future__ import annotations

import json

import pytest

from cloudgreet_billing.config import load_settings, redact, scrub_secrets, supabase_key_role
from cloudgreet_billing.errors import ConfigError, ExitCode
from tests.cli.helpers import run
from tests.postgrest.auth import ProjectKeys

URL = "https://qwertyuiopasdfghjklz.supabase.co"
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def keys():
    """A project's four keys, of the shapes Supabase issues (legacy JWTs signed HS256)."""
    return ProjectKeys.generate("qwertyuiopasdfghjklz")


def test_the_role_of_each_kind_of_key(keys):
    assert supabase_key_role(keys.secret) == "service_role"
    assert supabase_key_role(keys.service_role) == "service_role"
    assert supabase_key_role(keys.publishable) == "anon"
    assert supabase_key_role(keys.anon) == "anon"
    assert supabase_key_role(keys.user_token()) == "authenticated"
    assert supabase_key_role("not-a-key") is None
    assert supabase_key_role("a.b.c") is None  # three parts, but no JSON payload


@pytest.mark.parametrize("variable", ["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"])
def test_either_variable_takes_either_service_key(keys, variable):
    for key, kind in ((keys.secret, "secret"), (keys.service_role, "service_role")):
        settings = load_settings({"SUPABASE_URL": URL, variable: key})
        assert settings.store_kind == "supabase"
        assert (settings.supabase_key, settings.supabase_key_kind) == (key, kind)
        assert settings.supabase_key_variable == variable


def test_the_secret_key_wins_and_the_public_url_is_a_fallback(keys):
    settings = load_settings(
        {
            "NEXT_PUBLIC_SUPABASE_URL": URL + "/",
            "SUPABASE_SERVICE_ROLE_KEY": keys.service_role,
            "SUPABASE_SECRET_KEY": keys.secret,
        }
    )
    assert (settings.supabase_url, settings.supabase_key_kind) == (URL, "secret")
    assert settings.supabase_key_variable == "SUPABASE_SECRET_KEY"


def test_the_database_url_still_wins(keys):
    env = {"SUPABASE_URL": URL, "SUPABASE_SECRET_KEY": keys.secret}
    assert load_settings({**env, "BILLING_DATABASE_URL": "postgresql://u@db/x"}).store_kind == (
        "postgres"
    )
    assert load_settings({"SUPABASE_SECRET_KEY": keys.secret}).store_kind == "sqlite"  # no URL


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("publishable", "holds a publishable key (sb_publishable_…), which runs as anon"),
        ("anon", "holds the anon key, which runs as anon"),
    ],
)
def test_a_key_that_runs_as_anon_is_refused_with_the_fix(keys, kind, message):
    for variable in ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"):
        with pytest.raises(ConfigError) as refused:
            load_settings({"SUPABASE_URL": URL, variable: getattr(keys, kind)})
        assert str(refused.value) == f"{variable} {message}"
        assert refused.value.hint == (
            "use the service_role or secret key from Project Settings → API Keys"
        )
        assert refused.value.exit_code == ExitCode.BAD_INPUT


def test_a_user_token_or_a_stranger_is_refused(keys):
    with pytest.raises(ConfigError, match="a JWT for the role 'authenticated'"):
        load_settings({"SUPABASE_SECRET_KEY": keys.user_token()})
    with pytest.raises(ConfigError) as stranger:
        load_settings({"SUPABASE_SERVICE_ROLE_KEY": "sk_live_51Habcdefghijka1b2"})
    assert str(stranger.value) == (
        "SUPABASE_SERVICE_ROLE_KEY 'sk_live_…a1b2' is not a Supabase API key"
    )
    assert "sb_secret_" in (stranger.value.hint or "")


def test_the_cli_refuses_an_anon_key_with_exit_2_and_one_line(keys, monkeypatch):
    monkeypatch.setenv("SUPABASE_URL", URL)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", keys.anon)
    result = run("db", "status")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "SUPABASE_SERVICE_ROLE_KEY holds the anon key" in result.stderr
    assert "Project Settings → API Keys" in result.stderr
    assert "Traceback" not in result.stderr
    assert keys.anon not in result.stdout + result.stderr


def test_keys_are_redacted_in_repr_describe_and_scrubbed_text(keys):
    env = {"SUPABASE_URL": URL, "SUPABASE_SERVICE_ROLE_KEY": keys.service_role,
           "SUPABASE_SECRET_KEY": keys.secret}  # fmt: skip
    settings = load_settings(env)
    shown = repr(settings) + json.dumps(settings.describe())
    assert settings.describe()["SUPABASE_SECRET_KEY"] == redact(keys.secret)
    assert redact(keys.secret) == f"sb_secret_…{keys.secret[-4:]}"
    signature = keys.service_role.rsplit(".", 1)[1]
    text = f"401 for {keys.secret}; token {keys.service_role}; signature {signature}"
    scrubbed = scrub_secrets(text, env)
    for secret in (keys.secret, keys.service_role, signature):
        assert secret not in shown
        assert secret not in scrubbed


@pytest.mark.parametrize("kind", ["secret", "service_role"])
def test_no_command_prints_the_key(keys, kind, monkeypatch, no_retry_sleep):
    key = getattr(keys, kind)
    # A project nothing answers at (the discard port): every command fails to reach it,
    # and none may print the key while saying so.
    monkeypatch.setenv("SUPABASE_URL", UNREACHABLE)
    monkeypatch.setenv("SUPABASE_SECRET_KEY", key)
    signature = key.rsplit(".", 1)[-1]
    for args in (["doctor"], ["doctor", "--json"], ["db", "status", "--json"], ["dashboard"],
                 ["alerts", "list"]):  # fmt: skip
        result = run(*args)
        output = result.stdout + result.stderr
        assert key not in output, args
        assert signature not in output, args
    store = run("db", "status")
    assert store.exit_code == ExitCode.UNAVAILABLE
    assert f"cannot reach Supabase at {UNREACHABLE}" in store.stderr
