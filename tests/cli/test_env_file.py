"""``--env-file``: before or after the command, and a notice when the environment wins."""

from __future__ import annotations

import pytest

from cloudgreet_billing.cli import env_file_first
from tests.cli.helpers import data, run

FILE_KEY = "sk_test_51QpL8HLkdIwHu7ixFILEfileFILE4242"
SHELL_KEY = "sk_test_51QpL8HLkdIwHu7ixSHELLshellSH9999"
LIVE_KEY = "sk_live_51QpL8HLkdIwHu7ixLIVEliveLIVE7777"


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "ops.env"
    path.write_text(
        f"BILLING_DATABASE_URL=sqlite:///{tmp_path}/from-file.db\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("--env-file", "{file}", "db", "status", "--json"),
        ("db", "status", "--env-file", "{file}", "--json"),
        ("db", "status", "--json", "--env-file={file}"),
    ],
    ids=["before", "after", "after-with-equals"],
)
def test_the_env_file_is_read_before_or_after_the_command(env_file, tmp_path, args):
    result = run(*(arg.format(file=env_file) for arg in args))
    status = data(result)
    assert status["location"] == f"{tmp_path}/from-file.db"


def test_a_missing_env_file_after_the_command_is_bad_input(tmp_path):
    result = run("db", "status", "--env-file", str(tmp_path / "nope.env"))
    assert result.exit_code == 2
    assert f"--env-file {tmp_path / 'nope.env'} does not exist" in result.stderr


def test_only_options_before_a_double_dash_move():
    assert env_file_first(["alerts", "note", "3", "--env-file", "a.env", "--", "--env-file"]) == [
        "--env-file",
        "a.env",
        "alerts",
        "note",
        "3",
        "--",
        "--env-file",
    ]


def test_the_environment_winning_over_the_file_is_said_once_with_values_redacted(
    env_file, tmp_path, monkeypatch
):
    env_file.write_text(
        env_file.read_text()
        + "BILLING_ACTOR=ops@cloudgreet\n"
        + f"STRIPE_SECRET_KEY={FILE_KEY}\n"
        + "SMTP_URL=smtp://mailer:filepass99@smtp.example:587\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("STRIPE_SECRET_KEY", SHELL_KEY)
    monkeypatch.setenv("SMTP_URL", "smtp://mailer:shellpass11@smtp.example:587")
    monkeypatch.setenv("BILLING_ACTOR", "ops@cloudgreet")  # the same value: nothing to say

    result = run("db", "status", "--json", "--env-file", str(env_file))

    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    stripe = [line for line in lines if "STRIPE_SECRET_KEY" in line]
    smtp = [line for line in lines if "SMTP_URL" in line]
    assert stripe == [
        f"note: STRIPE_SECRET_KEY from the environment (sk_test_…9999) wins over {env_file} "
        "(sk_test_…4242)"
    ]
    assert smtp == [
        "note: SMTP_URL from the environment (smtp://mailer:***@smtp.example:587) wins over "
        f"{env_file} (smtp://mailer:***@smtp.example:587)"
    ]
    assert not any("BILLING_ACTOR" in line for line in lines)
    for secret in (FILE_KEY, SHELL_KEY, "filepass99", "shellpass11"):
        assert secret not in result.stderr
        assert secret not in result.stdout


def test_a_live_key_from_the_environment_over_a_file_without_one_is_a_warning(
    env_file, monkeypatch
):
    env_file.write_text(env_file.read_text() + "STRIPE_SECRET_KEY=\n", encoding="utf-8")
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)

    result = run("--env-file", str(env_file), "db", "status")

    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "STRIPE_SECRET_KEY" in line]
    assert warnings == [
        "warning: STRIPE_SECRET_KEY from the environment is a LIVE key (sk_live_…7777) and "
        f"wins over {env_file} (empty): Stripe calls here reach the live account "
        "(unset STRIPE_SECRET_KEY to use the file's setting)"
    ]


def test_no_notice_when_the_file_is_the_only_source(env_file):
    result = run("db", "status", "--env-file", str(env_file))
    assert result.exit_code == 0, result.output
    assert "wins over" not in result.stderr
