"""The CLI on the Supabase REST store, configured as an engineer's ``.env`` from the Next.js
app configures it (``SUPABASE_URL`` and a secret key, nothing else), through the real
``supabase`` client and the PostgREST stand-in on a real PostgreSQL.

Every test also checks that no key appears in anything the command printed, human or JSON,
success or error."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudgreet_billing.adapters.store.migrations import LATEST_SCHEMA_VERSION, postgres_migrations
from cloudgreet_billing.adapters.store.postgres import PostgresStore
from cloudgreet_billing.domain.dunning import TimelinePlanner
from cloudgreet_billing.domain.quarantine import reject
from cloudgreet_billing.errors import ExitCode
from tests.cli.helpers import run
from tests.postgrest.server import Fault
from tests.sync.conftest import full_invoice

pytestmark = pytest.mark.postgres


def printed(result) -> str:
    return result.stdout + result.stderr


def assert_no_key(result, postgrest) -> None:
    """No key of the project, whole or as a JWT's signature alone, was printed."""
    shown = printed(result)
    keys = postgrest.keys
    for key in (keys.secret, keys.publishable, keys.service_role, keys.anon, keys.jwt_secret):
        assert key not in shown
        assert key.rsplit(".", 1)[-1] not in shown


@pytest.fixture
def rest_env(postgrest, monkeypatch):
    """Only the project URL and the secret key, as the contract's selection rule needs."""
    monkeypatch.setenv("SUPABASE_URL", postgrest.url)
    monkeypatch.setenv("SUPABASE_SECRET_KEY", postgrest.keys.secret)
    return postgrest


@pytest.fixture
def project(supabase_store, rest_env):
    """A project whose schema the owner applied (the SQL editor's route)."""
    return rest_env


def test_db_status_reads_the_project_through_rest(project):
    result = run("db", "status", "--json")
    assert result.exit_code == 0, printed(result)
    status = json.loads(result.stdout)["data"]
    assert status["backend"] == "supabase"
    assert status["location"] == project.url
    assert status["schema_version"] == LATEST_SCHEMA_VERSION
    assert status["tables"]["billing_schema_version"] == LATEST_SCHEMA_VERSION
    assert status["tables"]["billing_alerts"] == 0
    assert project.requests_to("^/rpc/billing_api_row_counts", "POST")
    assert_no_key(result, project)


def test_db_status_in_human_form_names_the_store_on_stderr(project):
    result = run("db", "status")
    assert result.exit_code == 0, printed(result)
    assert f"store: supabase {project.url}" in result.stderr
    assert "backend: supabase" in result.stdout
    assert f"schema version: {LATEST_SCHEMA_VERSION}" in result.stdout
    assert_no_key(result, project)


def test_doctor_shows_the_project_the_key_kind_the_functions_and_the_round_trip(project):
    result = run("doctor", "--json")
    checks = {check["name"]: check for check in json.loads(result.stdout)["data"]["checks"]}
    store = checks["store"]
    assert store["status"] == "ok", store
    detail = store["detail"]
    assert detail.startswith(f"supabase {project.url} (secret key from SUPABASE_SECRET_KEY)")
    assert f"schema version {LATEST_SCHEMA_VERSION}" in detail
    assert "(0007_supabase_api.sql), writable" in detail
    assert re.search(r"round trip \d+ ms$", detail), detail
    assert project.requests_to("^/rpc/billing_api_health", "POST")
    assert_no_key(result, project)


def test_doctor_in_human_form_never_shows_the_key(project):
    result = run("doctor")
    assert "✓ store: ok — supabase " in result.stdout
    assert "sb_secret_" not in printed(result)
    assert_no_key(result, project)


def test_a_legacy_service_role_jwt_is_accepted(supabase_store, postgrest, monkeypatch):
    monkeypatch.setenv("NEXT_PUBLIC_SUPABASE_URL", postgrest.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", postgrest.keys.service_role)
    result = run("db", "status", "--json")
    assert result.exit_code == 0, printed(result)
    assert json.loads(result.stdout)["data"]["backend"] == "supabase"
    doctor = run("doctor", "--json")
    store = {c["name"]: c for c in json.loads(doctor.stdout)["data"]["checks"]}["store"]
    assert "(service_role key from SUPABASE_SERVICE_ROLE_KEY)" in store["detail"]
    assert_no_key(result, postgrest)
    assert_no_key(doctor, postgrest)


@pytest.mark.parametrize("kind", ["anon", "publishable"])
def test_an_anon_or_publishable_key_is_refused_before_any_request(
    supabase_store, postgrest, monkeypatch, kind
):
    monkeypatch.setenv("SUPABASE_URL", postgrest.url)
    monkeypatch.setenv("SUPABASE_SECRET_KEY", getattr(postgrest.keys, kind))
    result = run("db", "status", "--json")
    assert result.exit_code == ExitCode.BAD_INPUT
    refused = json.loads(result.stdout)["error"]
    assert refused["code"] == "config"
    assert "runs as anon" in refused["message"]
    assert "service_role or secret key" in refused["hint"]
    assert not postgrest.requests_to(".")
    assert_no_key(result, postgrest)


def test_a_key_the_project_does_not_know_is_exit_2_with_the_fix(
    supabase_store, postgrest, monkeypatch
):
    monkeypatch.setenv("SUPABASE_URL", postgrest.url)
    other = "sb_secret_" + "N0tTh1sPr0jectsK3y" * 2
    monkeypatch.setenv("SUPABASE_SECRET_KEY", other)
    result = run("db", "status")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.stdout == ""
    assert "refused the key" in result.stderr
    assert "Project Settings → API Keys" in result.stderr
    assert other not in printed(result)


def test_the_project_unreachable_is_exit_75(project):
    url = project.url
    project.stop()
    result = run("db", "status", "--json")
    assert result.exit_code == ExitCode.UNAVAILABLE
    failure = json.loads(result.stdout)["error"]
    assert failure["code"] == "store_unavailable"
    assert f"cannot reach Supabase at {url}" in failure["message"]
    assert_no_key(result, project)


def test_a_5xx_from_the_gateway_is_exit_75(project):
    project.inject(Fault(method="POST", path="^/rpc/billing_api_row_counts", status=503))
    result = run("db", "status")
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert "is unavailable" in result.stderr
    assert "retry later" in result.stderr
    assert_no_key(result, project)


def test_a_missing_function_says_which_migration_to_apply(project):
    project.sql("DROP FUNCTION billing_api_row_counts()")
    result = run("db", "status", "--json")
    assert result.exit_code == ExitCode.FAILED
    failure = json.loads(result.stdout)["error"]
    assert "migration 0007_supabase_api.sql is not applied" in failure["message"]
    assert "db migrate --print-sql" in failure["hint"]
    doctor = run("doctor", "--json")
    store = {c["name"]: c for c in json.loads(doctor.stdout)["data"]["checks"]}["store"]
    assert store["status"] == "fail"
    assert (
        "1 API function of 0007_supabase_api.sql missing (billing_api_row_counts)"
        in (store["detail"])
    )
    assert doctor.exit_code == ExitCode.FAILED
    assert_no_key(result, project)
    assert_no_key(doctor, project)


def test_db_migrate_on_a_current_project_has_nothing_to_apply(project):
    result = run("db", "migrate")
    assert result.exit_code == 0, printed(result)
    # The same answer as the other stores give: nothing is pending.
    assert f"schema is up to date (version {LATEST_SCHEMA_VERSION})" in result.stdout
    assert_no_key(result, project)


def test_db_migrate_on_a_new_project_lists_every_file_in_version_order(rest_env):
    result = run("db", "migrate", "--json")
    assert result.exit_code == ExitCode.NEEDS_ATTENTION, printed(result)
    plan = json.loads(result.stdout)["data"]
    assert plan["backend"] == "supabase"
    assert plan["applied"] == []
    assert plan["schema_version"] is None
    assert [(p["version"], p["file"]) for p in plan["pending"]] == [
        (m.version, m.path.name) for m in postgres_migrations()
    ]
    assert plan["pending"][0]["file"] == "CREATE_BILLING_INFRASTRUCTURE.sql"
    assert "--print-sql" in plan["routes"]["sql_editor"]
    assert "supabase db push" in plan["routes"]["supabase_cli"]
    # Nothing was written through the API.
    assert not rest_env.sql("SELECT 1 FROM pg_tables WHERE tablename = 'billing_alerts'")
    assert_no_key(result, rest_env)


def test_db_migrate_on_a_project_one_version_behind_lists_only_what_it_lacks(project):
    project.sql("DELETE FROM billing_schema_version WHERE version = %s", (LATEST_SCHEMA_VERSION,))
    result = run("db", "migrate")
    assert result.exit_code == ExitCode.NEEDS_ATTENTION, printed(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("the Supabase REST API cannot change the schema: ")
    assert f"at version {LATEST_SCHEMA_VERSION - 1}" in lines[0]
    listed = [line.split() for line in lines if line.startswith("  ")]
    assert [(int(v), path.rsplit("/", 1)[1]) for v, path in listed] == [
        (LATEST_SCHEMA_VERSION, "0007_supabase_api.sql")
    ]
    assert any(line.startswith("SQL editor: ") for line in lines)
    assert any(line.startswith("Supabase CLI: ") for line in lines)
    assert_no_key(result, project)


def test_print_sql_writes_every_file_in_order_and_opens_no_store(rest_env):
    result = run("db", "migrate", "--print-sql")
    assert result.exit_code == 0, printed(result)
    banners = re.findall(
        r"^-- ==== \d+/\d+: (\S+) \(schema version (\d+)\) ====$", result.stdout, re.M
    )
    assert banners == [(m.path.name, str(m.version)) for m in postgres_migrations()]
    assert not rest_env.requests_to(".")
    # The script, as printed, builds the schema the store then reads through REST.
    rest_env.sql(result.stdout)
    status = run("db", "status", "--json")
    assert json.loads(status.stdout)["data"]["schema_version"] == LATEST_SCHEMA_VERSION


def test_supabase_cli_dir_writes_files_that_sort_in_version_order(rest_env, tmp_path):
    target = tmp_path / "supabase" / "migrations"
    result = run("db", "migrate", "--supabase-cli-dir", str(target), "--json")
    assert result.exit_code == 0, printed(result)
    written = json.loads(result.stdout)["data"]["written"]
    names = [path.rsplit("/", 1)[1] for path in written]
    assert names == sorted(names) == sorted(p.name for p in target.iterdir())
    assert names[0] == "20260101000001_cloudgreet_billing_create_billing_infrastructure.sql"
    assert len(names) == len(postgres_migrations())
    assert not rest_env.requests_to(".")


def test_doctor_with_the_project_unreachable_fails_its_store_check_in_one_line(project):
    url = project.url
    project.stop()
    result = run("doctor", "--json")
    assert result.exit_code == ExitCode.FAILED
    store = {c["name"]: c for c in json.loads(result.stdout)["data"]["checks"]}["store"]
    assert store["status"] == "fail"
    assert f"cannot reach Supabase at {url}" in store["detail"]
    # The checks that read the store do not each wait out the client's GET retries again.
    skipped = {c["name"]: c["detail"] for c in json.loads(result.stdout)["data"]["checks"]}
    assert skipped["quarantine"] == "skipped: the store is not ready (see store)"
    assert_no_key(result, project)


def test_a_refused_key_in_json_mode_is_never_echoed(supabase_store, postgrest, monkeypatch):
    other = postgrest.keys.service_role.rsplit(".", 1)[0] + ".c2lnbmVkQnlBbm90aGVyUHJvamVjdA"
    monkeypatch.setenv("SUPABASE_URL", postgrest.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", other)
    result = run("db", "status", "--json")
    assert result.exit_code == ExitCode.BAD_INPUT
    refused = json.loads(result.stdout)["error"]
    assert refused["code"] == "config"
    assert "refused the key" in refused["message"]
    assert other not in printed(result)
    assert other.rsplit(".", 1)[1] not in printed(result)


def test_quarantine_list_and_retry_through_rest(project):
    bad = {
        "id": "evt_1QpL8ILkdIwHu7ixAbCdEf00",
        "object": "event",
        "type": "invoice.payment_failed",
        "created": 1_763_900_000,
        "livemode": False,
        "data": {"object": {**full_invoice("in_1QpL8HLkdIwHu7ixl4OzzPMv"), "amount_due": [1]}},
    }
    owner = PostgresStore(project.database_url)
    try:
        owner.apply_event_plans(
            [],
            planner=TimelinePlanner(),
            now=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
            rejected=[reject(bad, "amount_due is not an integer", "webhook")],
        )
    finally:
        owner.close()
    listed = run("quarantine", "list", "--json")
    assert listed.exit_code == 0, printed(listed)
    (row,) = json.loads(listed.stdout)["data"]
    assert (row["event_id"], row["status"]) == ("evt_1QpL8ILkdIwHu7ixAbCdEf00", "quarantined")
    assert project.requests_to("^/rpc/billing_api_list_quarantined", "POST")
    # Today's code still cannot plan it: the row stays, with today's reason; exit 4.
    still = run("quarantine", "retry", str(row["id"]), "--json")
    assert still.exit_code == ExitCode.NEEDS_ATTENTION, printed(still)
    assert json.loads(still.stdout)["data"]["results"][0]["status"] == "quarantined"
    assert project.requests_to("^/rpc/billing_api_retry_quarantined", "POST")
    assert_no_key(listed, project)
    assert_no_key(still, project)


def test_db_migrate_names_0007_again_when_an_older_release_applied_it(project):
    """0007 grows with each release (CREATE OR REPLACE): a project at version 7 may still
    lack a function this release calls."""
    project.sql("DROP FUNCTION billing_api_count_quarantined(jsonb)")
    result = run("db", "migrate", "--json")
    assert result.exit_code == ExitCode.NEEDS_ATTENTION, printed(result)
    plan = json.loads(result.stdout)["data"]
    assert plan["schema_version"] == LATEST_SCHEMA_VERSION
    assert plan["missing_functions"] == ["billing_api_count_quarantined"]
    assert [p["file"] for p in plan["pending"]] == ["0007_supabase_api.sql"]
    human = run("db", "migrate")
    assert "lacks 1 API function of this release (billing_api_count_quarantined)" in human.stdout
    # Applied again (safe: every function is CREATE OR REPLACE), nothing is left to do.
    project.sql(next(m for m in postgres_migrations() if m.version == 7).path.read_text())
    assert run("db", "migrate").exit_code == 0


def test_a_key_in_the_env_file_overridden_by_the_environment_is_named_redacted(project):
    # The app's .env holds the legacy JWT; the shell exports the new secret key.
    Path(".env").write_text(f"SUPABASE_SECRET_KEY={project.keys.service_role}\n")
    result = run("db", "status")
    assert result.exit_code == 0, printed(result)
    assert "SUPABASE_SECRET_KEY from the environment (sb_secret_…" in result.stderr
    assert "wins over .env (…" in result.stderr
    assert_no_key(result, project)
