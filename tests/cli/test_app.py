"""The command itself: version, env files, errors, help, and the store it picks."""

from __future__ import annotations

import json

import click
import pytest
from typer.main import get_command

from cloudgreet_billing import __version__
from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION
from cloudgreet_billing.cli import app
from tests.cli.helpers import data, error, run


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cloudgreet-billing {__version__}"


def test_env_file_is_loaded_but_real_environment_wins(tmp_path, monkeypatch):
    env = tmp_path / "custom.env"
    env.write_text(
        f"BILLING_DATABASE_URL=sqlite:///{tmp_path}/from-file.db\nBILLING_ACTOR=from-file\n"
    )
    monkeypatch.setenv("BILLING_ACTOR", "from-env")
    status = data(run("--env-file", str(env), "db", "status", "--json"))
    assert status["location"].endswith("from-file.db")
    import os

    assert os.environ["BILLING_ACTOR"] == "from-env"


def test_dot_env_in_the_working_directory_is_the_default(isolated_env, tmp_path):
    (isolated_env / ".env").write_text(f"BILLING_DATABASE_URL=sqlite:///{tmp_path}/dot.db\n")
    assert data(run("db", "status", "--json"))["location"].endswith("dot.db")


def test_missing_env_file_is_bad_input():
    result = run("--env-file", "/nonexistent/.env", "db", "status")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_default_store_is_sqlite_in_the_user_data_directory(isolated_env, tmp_path):
    status = data(run("db", "status", "--json"))
    assert status["backend"] == "sqlite"
    assert status["location"].startswith(str(tmp_path / "data-home"))
    # The embedded store installs its own schema on first use.
    assert data(run("ledger", "list", "--json")) == []
    assert data(run("db", "status", "--json"))["schema_version"] == LATEST_SCHEMA_VERSION


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STRIPE_SECRET_KEY", "pk_live_abc123456789", "publishable key"),
        ("STRIPE_SECRET_KEY", "hello", "is not a Stripe secret key"),
        ("BILLING_DATABASE_URL", "mysql://x@y/z", "unknown scheme mysql://"),
        ("SMTP_URL", "http://mail.example.com", "SMTP_URL is not an smtp://"),
        ("SMTP_URL", "smtp://mail.example.com:port", "SMTP_URL has a bad port"),
        ("BILLING_EMAIL_BACKEND", "pigeon", "BILLING_EMAIL_BACKEND must be one of"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_a,nope", "not a signing secret"),
    ],
)
def test_malformed_configuration_is_one_line_naming_the_variable(
    monkeypatch, variable, value, message
):
    monkeypatch.setenv(variable, value)
    result = run("ledger", "list")
    assert result.exit_code == 2
    assert message in result.stderr
    assert variable in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # The secret itself never appears.
    assert value not in result.stderr or variable not in ("STRIPE_SECRET_KEY",)
    as_json = error(run("ledger", "list", "--json"))
    assert as_json["code"] == "config"


def test_secret_key_is_redacted_in_errors(monkeypatch):
    monkeypatch.setenv("STRIPE_SECRET_KEY", "zz_live_supersecretvalue1234")
    result = run("ledger", "list")
    assert "supersecret" not in result.stderr


def test_unreachable_postgres_is_temporarily_unavailable(monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BILLING_DATABASE_URL", f"postgresql://u:hunter2@127.0.0.1:{port}/db")
    result = run("ledger", "list", "--json")
    assert result.exit_code == 75
    assert "hunter2" not in result.stdout + result.stderr
    assert error(result)["code"] == "store_unavailable"


def test_usage_errors_exit_2_and_are_json_in_json_mode():
    result = run("ledger", "list", "--limit", "zero", "--json")
    assert result.exit_code == 2
    assert error(result)["code"] == "usage"
    assert run("ledger", "frobnicate").exit_code == 2


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch):
    from cloudgreet_billing.services import ledger

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ledger, "list_entries", explode)
    result = run("ledger", "list")
    assert result.exit_code == 1
    assert "unexpected RuntimeError: disk on fire" in result.stderr
    assert "Traceback" not in result.stderr
    monkeypatch.setenv("BILLING_DEBUG", "1")
    assert "Traceback" in run("ledger", "list").stderr


def _commands(group: click.Command, path: tuple[str, ...] = ()):
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def test_every_command_and_option_has_help_and_json():
    root = get_command(app)
    for path, command in _commands(root):
        assert command.help, f"{' '.join(path) or 'root'} has no help"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{' '.join(path)} {param.opts} has no help"
        if not getattr(command, "commands", None) and path:
            assert "--json" in [o for p in command.params for o in getattr(p, "opts", [])], path


def test_doctor_reports_each_part(store_env):
    report = data(run("doctor", "--json"))
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["configuration"] == "ok"
    assert checks["store"] == "ok"
    assert checks["stripe"] == "not_configured"
    assert report["ok"] is True


def test_doctor_fails_on_wrong_configuration(monkeypatch):
    monkeypatch.setenv("BILLING_EMAIL_BACKEND", "smtp")
    result = run("doctor", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["data"]["checks"]}
    assert checks["email"]["status"] == "fail"
    assert "SMTP_URL" in checks["email"]["detail"]


def test_db_migrate_and_status(database_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", database_url)
    if database_url.startswith("postgres"):
        refused = run("ledger", "list")
        assert refused.exit_code == 1
        assert "run: cloudgreet-billing db migrate" in refused.stderr
        assert data(run("db", "status", "--json"))["schema_version"] is None
    migrated = data(run("db", "migrate", "--json"))
    assert migrated["schema_version"] == LATEST_SCHEMA_VERSION
    assert data(run("db", "migrate", "--json"))["applied"] == []
    status = data(run("db", "status", "--json"))
    assert status["tables"]["billing_usage_ledger"] == 0
    assert "hunter" not in status["location"]


def test_a_malformed_postgres_url_never_echoes_the_password(monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://bob:s3cr%zzet@127.0.0.1/db")
    for args in (("db", "status"), ("ledger", "list", "--json"), ("doctor", "--json")):
        result = run(*args)
        assert "s3cr" not in result.stdout + result.stderr, args
        assert result.exit_code in (1, 2)
    assert "not a valid PostgreSQL connection URL" in run("db", "status").stderr


def test_unexpected_errors_are_scrubbed_of_configured_secrets(monkeypatch):
    from cloudgreet_billing.services import ledger

    secret = "sk_test_51Hsupersecretvalue9876"
    monkeypatch.setenv("STRIPE_SECRET_KEY", secret)

    def leak(*args, **kwargs):
        raise RuntimeError(f"request failed with key {secret}")

    monkeypatch.setattr(ledger, "list_entries", leak)
    result = run("ledger", "list")
    assert result.exit_code == 1
    assert secret not in result.stderr
    assert "sk_test_…9876" in result.stderr
