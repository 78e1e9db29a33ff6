"""Fixtures for the CLI tests."""

from tests.cli.seeded import seeded  # noqa: F401 (a fixture)
