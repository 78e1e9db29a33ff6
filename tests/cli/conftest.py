"""Fixtures for the CLI tests: ``seeded`` (tests.cli.seeded) for listings, and
``hostile_seeded`` (tests.cli.hostile), a store that refusals must leave as it is."""

from tests.cli.hostile import hostile_seeded, seeded_url
from tests.cli.seeded import seeded

__all__ = ["hostile_seeded", "seeded", "seeded_url"]
