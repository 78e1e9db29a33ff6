"""docs/runbook.md names only commands and options that exist, and the README links it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typer._click import Context  # the click Typer vendors, whose commands these are
from typer.core import TyperGroup
from typer.main import get_command

from cloudgreet_billing.cli import app

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = ROOT / "docs" / "runbook.md"
#: A command line as the runbook writes it: after the program name, up to the end of the
#: code span, the line, or a shell operator.
INVOCATION = re.compile(r"cloudgreet-billing((?:[ \t]+[^\s`|>;&()]+)+)")


def invocations() -> list[list[str]]:
    text = RUNBOOK.read_text(encoding="utf-8").replace("\\\n", " ")
    return [match.group(1).split() for match in INVOCATION.finditer(text)]


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The command the words name, and the words left for it (its options and arguments)."""
    command: Any = get_command(app)
    rest = list(words)
    while rest:
        if rest[0] == "--env-file":
            rest = rest[2:]
            continue
        if not isinstance(command, TyperGroup) or rest[0].startswith("-"):
            break
        found = command.get_command(Context(command), rest[0])
        assert found is not None, f"runbook names an unknown command: {' '.join(words)}"
        command, rest = found, rest[1:]
    return command, rest


def test_the_runbook_names_commands_that_exist():
    named = invocations()
    assert len(named) > 30
    for words in named:
        command, rest = resolve(words)
        assert not isinstance(command, TyperGroup), f"incomplete command: {' '.join(words)}"
        options = {name for param in command.params for name in getattr(param, "opts", [])}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=", 1)[0] in options, f"{' '.join(words)}: no option {word}"


def test_the_runbook_covers_the_playbook():
    text = RUNBOOK.read_text(encoding="utf-8")
    for situation in (
        "invoice_failed",
        "payment_action_required",
        "threshold_exceeded",
        "Stripe outage",
        "escalation",
        "mismatch over 1%",
        "weekly export",
        "Slack summary",
        "systemd",
        "cron",
    ):
        assert situation in text, situation


def test_the_readme_links_the_runbook():
    assert "(docs/runbook.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
