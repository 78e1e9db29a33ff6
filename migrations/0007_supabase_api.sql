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

-- ==== section: settings and schema (adapters/store/supabase/base.py) ====

-- Rows per billing table, for db status and doctor. The list is the store's TABLES.
CREATE OR REPLACE FUNCTION billing_api_row_counts() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    counts jsonb := '{}'::jsonb;
    tbl text;
    n bigint;
BEGIN
    FOREACH tbl IN ARRAY ARRAY[
        'billing_schema_version', 'billing_settings', 'billing_customers',
        'billing_subscriptions', 'billing_invoices', 'billing_stripe_events',
        'billing_alerts', 'billing_alert_notes', 'billing_usage_ledger',
        'billing_dunning_events', 'billing_audit_log', 'billing_quarantined_events',
        'billing_dunning_exemptions'
    ] LOOP
        -- Table names come from the list above, never from the caller.
        EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n;
        counts := counts || jsonb_build_object(tbl, n);
    END LOOP;
    RETURN counts;
END
$$;

-- A shared setting, wrapped as {"value": …} so that an unset key (NULL) and a stored
-- JSON null differ.
CREATE OR REPLACE FUNCTION billing_api_get_setting(p_key text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object('value', value) FROM billing_settings WHERE key = p_key
$$;

CREATE OR REPLACE FUNCTION billing_api_put_setting(
    p_key text, p_value jsonb, p_actor text, p_now timestamptz
) RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    INSERT INTO billing_settings (key, value, updated_at, updated_by)
    -- A JSON null arrives as SQL NULL (PostgREST casts the body with json_to_record).
    VALUES (p_key, coalesce(p_value, 'null'::jsonb), p_now, p_actor)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value,
        updated_at = excluded.updated_at, updated_by = excluded.updated_by
$$;

-- Fails as the store would on a write (a read-only transaction, no UPDATE privilege)
-- and writes nothing. VOLATILE, so PostgREST runs it in a read-write transaction.
CREATE OR REPLACE FUNCTION billing_api_check_writable() RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    UPDATE billing_settings SET key = key WHERE false
$$;


-- ==== end section: settings and schema ====

-- ==== section: mirror (adapters/store/supabase/mirror.py) ====

-- ==== end section: mirror ====

-- ==== section: quarantine, drift, actions (adapters/store/supabase/operations.py) ====

-- ==== end section: quarantine, drift, actions ====

-- ==== section: alerts, dunning (adapters/store/supabase/dunning.py) ====

-- ==== end section: alerts, dunning ====

-- ==== section: ledger, finance, audit (adapters/store/supabase/finance.py) ====

-- ==== end section: ledger, finance, audit ====

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
