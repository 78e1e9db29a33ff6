"""The Supabase REST store's own operations (schema, settings, row counts), through the
real ``supabase`` client and the PostgREST stand-in on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION, TABLES
from cloudgreet_billing.adapters.store.supabase.store import SupabaseStore
from cloudgreet_billing.errors import ConfigError, StoreError

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_schema_version_and_row_counts_come_through_rest(supabase_store, postgrest):
    assert supabase_store.backend == "supabase"
    assert supabase_store.schema_version() == LATEST_SCHEMA_VERSION
    assert supabase_store.row_counts() == {
        table: (LATEST_SCHEMA_VERSION if table == "billing_schema_version" else 0)
        for table in TABLES
    }
    assert postgrest.requests_to("^/rpc/billing_api_row_counts", "POST")


def test_settings_round_trip_and_an_unset_key_is_none(supabase_store):
    assert supabase_store.get_setting("dunning.pause") is None
    supabase_store.put_setting("dunning.pause", {"reason": "INC-42"}, "alice", NOW)
    supabase_store.put_setting("sync.cursor", None, "cron", NOW)
    assert supabase_store.get_setting("dunning.pause") == {"reason": "INC-42"}
    assert supabase_store.get_setting("sync.cursor") is None
    supabase_store.check_writable()


def test_migrate_has_nothing_to_do_on_a_current_project(supabase_store):
    assert supabase_store.migrate() == []


def test_migrate_on_a_new_project_is_refused_with_the_route_that_works(postgrest):
    store = SupabaseStore(postgrest.url, postgrest.keys.secret)
    with pytest.raises(StoreError, match="cannot change the schema") as refused:
        store.migrate()
    assert "--print-sql" in (refused.value.hint or "")
    assert store.schema_version() is None  # and nothing was created


def test_a_project_without_the_schema_says_so(postgrest):
    store = SupabaseStore(postgrest.url, postgrest.keys.secret)
    assert store.schema_version() is None
    with pytest.raises(StoreError, match=r"migration 0007_supabase_api\.sql is not applied"):
        store.row_counts()


def test_an_anon_key_is_denied(supabase_store, postgrest):
    anon = SupabaseStore(postgrest.url, postgrest.keys.anon)
    with pytest.raises(ConfigError) as denied:
        anon.row_counts()
    assert "key" in (denied.value.hint or "")
    assert postgrest.keys.anon not in str(denied.value)
