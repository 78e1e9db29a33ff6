"""Fixtures for the finance tests: a frozen clock at ``NOW``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from freezegun import freeze_time

from tests.finance.factories import NOW
from tests.stripe_fake import fake_stripe  # noqa: F401 (a fixture for the API tests)


@pytest.fixture
def frozen() -> Iterator[None]:
    """Commands run at ``NOW``, so windows and ages are exact."""
    with freeze_time(NOW):
        yield
