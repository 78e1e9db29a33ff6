"""The README's command reference is exactly what ``--help`` prints today."""

from __future__ import annotations

from tests.cli_reference import current, render


def test_readme_command_reference_matches_help():
    assert current().strip() == render().strip(), (
        "README's command reference is stale: run python -m tests.cli_reference --write"
    )
