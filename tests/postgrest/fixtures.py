"""pytest fixtures for the PostgREST stand-in (imported by ``tests/conftest.py``).

- ``supabase_db``: a fresh database on the test server, set up as a hosted Supabase
  project's (roles, grants, default privileges, UTC); its superuser URL.
- ``postgrest``: a running ``PostgrestStandin`` on that database, with fresh keys.
- ``supabase_store``: a ``SupabaseStore`` on ``postgrest``, schema applied by the owner.
- ``no_retry_sleep``: postgrest-py's retry back-off (1 s, 2 s, 4 s) without the sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def supabase_roles(postgres_server: str) -> str:
    from tests.postgrest.project import ensure_roles

    ensure_roles(postgres_server)
    return postgres_server


@pytest.fixture
def supabase_db(postgres_url: str, supabase_roles: str) -> str:
    from tests.postgrest.project import prepare_database

    prepare_database(postgres_url)
    return postgres_url


@pytest.fixture
def postgrest(supabase_db: str) -> Iterator[object]:
    from tests.postgrest.project import authenticator_url
    from tests.postgrest.server import PostgrestStandin

    standin = PostgrestStandin(supabase_db, authenticator_url(supabase_db)).start()
    try:
        yield standin
    finally:
        standin.close_clients()
        standin.stop()
    assert not standin.crashes, "the stand-in crashed:\n" + "\n".join(standin.crashes)


@pytest.fixture
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record postgrest-py's retry delays instead of sleeping them."""
    import postgrest._sync.request_builder as request_builder

    delays: list[int] = []
    original = request_builder.get_retry_delay

    def recorded(attempt: int) -> int:
        delays.append(original(attempt))
        return 0

    monkeypatch.setattr(request_builder, "get_retry_delay", recorded)
    return delays


@pytest.fixture
def supabase_store(postgrest: Any) -> Iterator[object]:
    """A ``SupabaseStore`` on the stand-in: the schema applied by the project's owner (as
    the SQL editor or ``supabase db push`` would), then reached with the secret key."""
    from cloudgreet_billing.adapters.store.postgres import PostgresStore
    from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore

    owner = PostgresStore(postgrest.database_url)
    owner.migrate()
    owner.close()
    opened = SupabaseStore(postgrest.url, postgrest.keys.secret)
    yield opened
    opened._api.close()
