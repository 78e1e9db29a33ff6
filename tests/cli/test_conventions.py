"""Conventions every command keeps, read from what ``--help`` and the console script show:
an example in every help, flags without a value placeholder, help that fits 80 columns
without a cut word, ``-V``, shell completion, and one program name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer import Context
from typer.main import get_command

from cloudgreet_billing import __version__
from tests.cli.helpers import run
from tests.cli_reference import README, command_paths, current, help_text

SCRIPT = Path(sys.executable).with_name("cloudgreet-billing")
BOX = re.compile("[│╭╮╰╯─]")


def commands():
    """Every command and group, with the texts its help is made of."""
    from cloudgreet_billing.cli import app

    context = Context(get_command(app))

    def walk(command, path):
        yield path, command
        if hasattr(command, "list_commands"):
            for name in sorted(command.list_commands(context)):
                yield from walk(command.get_command(context, name), (*path, name))

    yield from walk(context.command, ())


@pytest.fixture(scope="module")
def help_at_80() -> dict[tuple[str, ...], str]:
    return {path: help_text(path, columns=80) for path in command_paths()}


def test_every_help_has_an_example(help_at_80):
    missing = [
        " ".join(path) or "(root)"
        for path, text in help_at_80.items()
        if not re.search(r"^ Example[^:]*: .*cloudgreet-billing", text, re.MULTILINE)
    ]
    assert missing == []


def test_no_flag_shows_a_value_placeholder(help_at_80):
    assert [" ".join(path) for path, text in help_at_80.items() if "<bool>" in text] == []
    # The flags are still listed: --json, --dry-run, --help.
    assert "--dry-run" in help_at_80[("retry",)]


def test_help_fits_80_columns_and_never_cuts_a_word(help_at_80):
    too_wide = [
        (" ".join(path), line)
        for path, text in help_at_80.items()
        for line in text.splitlines()
        if len(line) > 80
    ]
    assert too_wide == []
    for path, command in commands():
        rendered = set(BOX.sub(" ", help_at_80[path]).split())
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {word for text in texts for word in text.replace("\b", "").split()}
        cut = sorted(words - rendered)
        assert cut == [], (" ".join(path), cut)


def test_paragraphs_are_wrapped_at_the_terminal_not_at_the_source():
    # ledger import's second paragraph is four source lines of about 85 characters: at 80
    # columns each would break into a full line and a stub of a word or two.
    text = help_text(("ledger", "import"), columns=80)
    paragraph = text.split("\n A row that repeats", 1)[1].split("\n\n", 1)[0]
    lines = (" A row that repeats" + paragraph).splitlines()
    assert len(lines) >= 3
    assert all(len(line) > 60 for line in lines[:-1]), lines


def test_dash_capital_v_prints_the_version():
    result = run("-V")
    assert result.exit_code == 0
    assert result.stdout == f"cloudgreet-billing {__version__}\n"


def test_show_completion_prints_a_script_for_the_shell_it_runs_in(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    shown = subprocess.run(
        ["bash", "-c", f"{SCRIPT} --show-completion"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "_CLOUDGREET_BILLING_COMPLETE=complete_bash" in shown.stdout
    assert "complete -o default -F" in shown.stdout


def test_completion_names_commands_and_their_options(tmp_path):
    def complete(words: str) -> list[str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "_CLOUDGREET_BILLING_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        result = subprocess.run(
            [str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert "alerts" in complete("cloudgreet-billing al")
    assert "--dry-run" in complete("cloudgreet-billing retry --d")


def test_the_reference_names_the_installed_command():
    reference = current()
    assert "python -m cloudgreet_billing" not in reference
    assert " Usage: cloudgreet-billing alerts list [OPTIONS]" in reference
    assert README.is_file()
