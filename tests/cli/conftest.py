"""Fixtures of the CLI tests: a seeded store on each backend (``tests.cli.hostile``)."""

from tests.cli.hostile import seeded, seeded_url

__all__ = ["seeded", "seeded_url"]
