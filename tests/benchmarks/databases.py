"""The PostgreSQL the benchmarks run on, and a fresh database on it for each measurement."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def postgres_server() -> Iterator[str]:
    """``BILLING_TEST_DATABASE_URL``, else a throwaway local cluster, stopped afterwards.
    ``SystemExit`` when there is neither."""
    base = os.environ.get("BILLING_TEST_DATABASE_URL")
    if base:
        yield base
        return
    from tests.pg_cluster import start_cluster

    cluster = start_cluster()
    if cluster is None:
        raise SystemExit("no PostgreSQL: set BILLING_TEST_DATABASE_URL")
    try:
        yield cluster.url
    finally:
        cluster.stop()


def fresh_database(base: str, prefix: str = "bench") -> str:
    """The URL of a new, empty database on ``base``'s server."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{base.rpartition('/')[0]}/{name}"


def drop_database(base: str, url: str) -> None:
    """Drop the database ``url`` names, connected to ``base``'s server."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')
