"""Fixtures of the CLI tests: a seeded store on each backend (``tests.cli.hostile``)."""

from tests.cli.hostile import seeded

__all__ = ["seeded"]
