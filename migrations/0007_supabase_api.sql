-- cloudgreet-billing schema, version 7: the store's API as Postgres functions, for the
-- Supabase REST store (adapters/store/supabase/).
-- Needs first: 0006_recovery.sql (version 6). Run in version order, not name order.
--
-- Through Supabase's REST API (PostgREST) each HTTP request is one transaction and no lock
-- survives between two requests, so every operation that must be atomic, or must read
-- many rows, is one function called with POST /rest/v1/rpc/<name> and named arguments.
-- Batches travel as JSON arrays (jsonb), so a sync of 10,000 events is tens of requests.
--
-- Every function:
-- * is SECURITY INVOKER with a fixed search_path (public, pg_temp), so it runs with the
--   caller's rights and cannot be redirected by a table of the same name elsewhere;
-- * may be executed by service_role only: EXECUTE is revoked from PUBLIC, anon and
--   authenticated (a hosted project's default privileges grant it to all three);
-- * is named billing_api_<operation>, and reads page by key (p_after, p_limit), never
--   by offset, because PostgREST caps every read at db-max-rows silently.
--
-- Runs cleanly any number of times (CREATE OR REPLACE).

BEGIN;

-- ==== section: settings and schema (adapters/store/supabase/store.py) ====

-- ==== end section: settings and schema ====

-- ==== section: mirror, quarantine, drift (adapters/store/supabase/mirror.py) ====

-- ==== end section: mirror, quarantine, drift ====

-- ==== section: alerts, dunning (adapters/store/supabase/dunning.py) ====

-- ==== end section: alerts, dunning ====

-- ==== section: ledger, finance, audit, actions (adapters/store/supabase/finance.py) ====

-- ==== end section: ledger, finance, audit, actions ====

-- Only service_role may call the API: revoke EXECUTE on every billing_api_ function from
-- PUBLIC and the API roles, then grant it to service_role (when the roles exist; a plain
-- PostgreSQL has none of them).
DO $$
DECLARE
    fn regprocedure;
    api_role text;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'billing\_api\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', fn, api_role);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
        END IF;
    END LOOP;
END
$$;

INSERT INTO billing_schema_version (version, name)
VALUES (7, '0007_supabase_api')
ON CONFLICT (version) DO NOTHING;

COMMIT;
