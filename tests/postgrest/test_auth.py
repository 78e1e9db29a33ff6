"""Auth as Supabase does it: the gateway's apikey, PostgREST's JWT, roles and grants."""

from __future__ import annotations

import time

import pytest
from postgrest.exceptions import APIError

from tests.postgrest.auth import sign_jwt
from tests.postgrest.conftest import rest

pytestmark = pytest.mark.postgres

WHOAMI = "CREATE FUNCTION whoami() RETURNS text LANGUAGE sql STABLE AS 'SELECT current_user'"


@pytest.fixture
def whoami(postgrest):
    postgrest.sql(WHOAMI)
    return postgrest


@pytest.mark.parametrize(
    ("kind", "role"),
    [
        ("secret", "service_role"),
        ("service_role", "service_role"),
        ("publishable", "anon"),
        ("anon", "anon"),
    ],
)
def test_each_key_kind_runs_as_its_role(whoami, kind, role):
    key = getattr(whoami.keys, kind)
    assert whoami.client(key).rpc("whoami", {}).execute().data == role


def test_new_keys_are_not_jwts_and_legacy_keys_are(whoami):
    keys = whoami.keys
    assert keys.secret.startswith("sb_secret_") and keys.secret.count(".") == 0
    assert keys.publishable.startswith("sb_publishable_")
    assert keys.service_role.startswith("eyJ") and keys.service_role.count(".") == 2


def test_an_unknown_key_is_refused_by_the_gateway(whoami):
    for key in ("sb_secret_notthisprojectskey_12345678", whoami.keys.service_role[:-4] + "AAAA"):
        with pytest.raises(APIError) as refused:
            whoami.client(key).rpc("whoami", {}).execute()
        assert refused.value.message == "Invalid API key"
        assert refused.value.hint == "Double check your Supabase `anon` or `service_role` API key."
        assert refused.value.code is None  # the gateway's body has no code


def test_no_apikey_at_all(whoami):
    response = rest(whoami, "POST", "/rpc/whoami", key="")
    assert response.status_code == 401
    assert response.json()["message"] == "No API key found in request"


def test_a_forged_token_is_pgrst301(whoami):
    forged = sign_jwt({"role": "service_role"}, "not-the-project-secret")
    response = rest(
        whoami,
        "POST",
        "/rpc/whoami",
        key=whoami.keys.anon,
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert response.status_code == 401
    assert response.json()["code"] == "PGRST301"
    assert response.json()["message"] == "JWT cryptographic operation failed"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_an_expired_token_is_pgrst303_jwt_expired(whoami):
    long_ago = int(time.time()) - 3600
    expired = sign_jwt({"role": "authenticated", "exp": long_ago}, whoami.keys.jwt_secret)
    response = rest(
        whoami,
        "POST",
        "/rpc/whoami",
        key=whoami.keys.publishable,
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert (response.status_code, response.json()["code"]) == (401, "PGRST303")
    assert response.json()["message"] == "JWT expired"


def test_an_opaque_key_in_authorization_must_equal_the_apikey(whoami):
    other = "sb_secret_" + "x" * 22 + "_abcdefgh"
    response = rest(
        whoami,
        "POST",
        "/rpc/whoami",
        key=whoami.keys.secret,
        headers={"Authorization": f"Bearer {other}"},
    )
    assert (response.status_code, response.json()["code"]) == (401, "PGRST301")
    assert response.json()["message"] == "Expected 3 parts in JWT; got 1"


def test_a_user_token_runs_as_authenticated(whoami):
    token = whoami.keys.user_token(sub="3f1c2a9e-0d6b-4c5e-9a7f-1b2c3d4e5f60")
    response = rest(
        whoami,
        "POST",
        "/rpc/whoami",
        key=whoami.keys.publishable,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.json() == "authenticated"


def test_a_token_for_a_role_that_does_not_exist_is_401(whoami):
    token = whoami.keys.user_token(role="billing_admin")
    response = rest(
        whoami,
        "POST",
        "/rpc/whoami",
        key=whoami.keys.anon,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (response.status_code, response.json()["code"]) == (401, "22023")
    assert response.json()["message"] == 'role "billing_admin" does not exist'


def test_default_privileges_expose_a_new_table_to_anon(postgrest):
    """What a migration must undo: hosted Supabase grants ALL on new objects to the API roles."""
    postgrest.sql(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);"
        "INSERT INTO notes VALUES (1, 'internal')"
    )
    assert postgrest.client(postgrest.keys.publishable).table("notes").select(
        "*"
    ).execute().data == [{"id": 1, "body": "internal"}]
    postgrest.sql("CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM notes'")
    postgrest.client(postgrest.keys.anon).rpc("wipe", {}).execute()  # EXECUTE was granted too
    assert postgrest.sql("SELECT count(*) FROM notes") == [(0,)]


def test_rls_without_a_policy_hides_rows_silently(postgrest):
    postgrest.sql(
        "CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes VALUES (1);"
        "ALTER TABLE notes ENABLE ROW LEVEL SECURITY"
    )
    anon = postgrest.client(postgrest.keys.anon).table("notes").select("*").execute()
    assert anon.data == []  # 200 and empty: RLS filters, it does not refuse
    assert postgrest.client().table("notes").select("*").execute().data == [{"id": 1}]


def test_a_revoked_table_is_401_for_anon_and_403_for_authenticated(postgrest):
    postgrest.sql(
        "CREATE TABLE notes (id int PRIMARY KEY);REVOKE ALL ON notes FROM anon, authenticated"
    )
    anon = rest(postgrest, "GET", "/notes", key=postgrest.keys.anon)
    assert (anon.status_code, anon.json()["code"]) == (401, "42501")
    assert anon.json()["message"] == "permission denied for table notes"
    user = rest(
        postgrest,
        "GET",
        "/notes",
        key=postgrest.keys.publishable,
        headers={"Authorization": f"Bearer {postgrest.keys.user_token()}"},
    )
    assert (user.status_code, user.json()["code"]) == (403, "42501")
    assert rest(postgrest, "GET", "/notes").status_code == 200  # service_role keeps its grant


def test_the_billing_migrations_keep_the_api_roles_out(postgrest):
    from cloudgreet_billing.adapters.store.migrations import postgres_migrations

    for migration in postgres_migrations():
        postgrest.sql(migration.path.read_text())
    for key in (postgrest.keys.anon, postgrest.keys.publishable):
        response = rest(postgrest, "GET", "/billing_dunning_events", key=key)
        assert (response.status_code, response.json()["code"]) == (401, "42501")
    token = postgrest.keys.user_token()
    user = rest(
        postgrest,
        "POST",
        "/billing_alerts",
        key=postgrest.keys.publishable,
        headers={"Authorization": f"Bearer {token}"},
        json={},
    )
    assert (user.status_code, user.json()["code"]) == (403, "42501")
    # The service role reads them (BYPASSRLS), through either kind of key.
    for key in (postgrest.keys.secret, postgrest.keys.service_role):
        rows = postgrest.client(key).table("billing_schema_version").select("version").execute()
        assert [r["version"] for r in rows.data] == [m.version for m in postgres_migrations()]


def test_an_unknown_table_is_pgrst205_with_a_hint(postgrest):
    postgrest.sql("CREATE TABLE billing_alerts (id int)")
    with pytest.raises(APIError) as missing:
        postgrest.client().table("billing_alert").select("*").execute()
    assert missing.value.code == "PGRST205"
    assert missing.value.message == (
        "Could not find the table 'public.billing_alert' in the schema cache"
    )
    assert missing.value.hint == "Perhaps you meant the table 'public.billing_alerts'"


def test_a_schema_that_is_not_exposed_is_pgrst106(postgrest):
    response = rest(postgrest, "GET", "/anything", headers={"Accept-Profile": "billing"})
    assert (response.status_code, response.json()["code"]) == (406, "PGRST106")
    assert (
        response.json()["hint"] == "Only the following schemas are exposed: public, graphql_public"
    )


def test_a_function_revoked_from_the_api_roles_is_service_role_only(postgrest):
    """The grants an RPC migration needs: EXECUTE is granted to PUBLIC by PostgreSQL and to
    anon/authenticated by the default privileges, so all three must be revoked."""
    postgrest.sql(
        "CREATE FUNCTION claim() RETURNS int LANGUAGE sql AS 'SELECT 1';"
        "REVOKE EXECUTE ON FUNCTION claim() FROM anon, authenticated"
    )
    still_public = rest(postgrest, "POST", "/rpc/claim", key=postgrest.keys.anon)
    assert still_public.status_code == 200  # PUBLIC's EXECUTE still lets anon in
    postgrest.sql("REVOKE EXECUTE ON FUNCTION claim() FROM PUBLIC")
    anon = rest(postgrest, "POST", "/rpc/claim", key=postgrest.keys.publishable)
    assert (anon.status_code, anon.json()["code"]) == (401, "42501")
    assert anon.json()["message"] == "permission denied for function claim"
    assert postgrest.client().rpc("claim", {}).execute().data == 1
