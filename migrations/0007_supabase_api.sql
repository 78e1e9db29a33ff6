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

-- What doctor shows of the API: the schema version and every billing_api_ function the
-- project has, so that a function a later release added (0007 applied by an older
-- release) is named as missing rather than found at its first call.
CREATE OR REPLACE FUNCTION billing_api_health() RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object(
        'schema_version', (SELECT max(version) FROM billing_schema_version),
        'functions', (
            SELECT coalesce(jsonb_agg(DISTINCT p.proname ORDER BY p.proname), '[]'::jsonb)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND p.proname LIKE 'billing\_api\_%'
        )
    )
$$;


-- ==== end section: settings and schema ====

-- ==== section: mirror (adapters/store/supabase/mirror.py) ====

-- The mirror of Stripe objects and the application of Stripe events, ported statement by
-- statement from sql_mirror.py (and the hooks it calls in sql_alerts.py, sql_dunning.py,
-- sql_quarantine.py, sql_audit.py), so that both stores merge by domain.merge's rules:
-- whatever the order of events, the same rows. Objects travel as the JSON objects
-- adapters/store/supabase/event_plans.py writes (times as ISO 8601 with their offset).
--
-- billing_api_mirror_* are helpers of the functions below; they are billing_api_ functions
-- too, so that the grant block at the end of this file keeps them from the API roles.

-- What each helper raises for a fault of the event that the database cannot see (the
-- planner failed, the event holds what PostgreSQL cannot store): SQLSTATE BLEVT, its
-- message the quarantine reason.

-- An invoice observation, merged (domain.merge): the object shown comes from the
-- observation with the largest (status rank, event created, attempt_count, event id);
-- counters never fall; the earliest settlement counts. p_event_id is '' for a listing.
-- Whether the row now shows this observation.
CREATE OR REPLACE FUNCTION billing_api_mirror_upsert_invoice(
    p_invoice jsonb, p_observed timestamptz, p_now timestamptz, p_event_id text,
    p_resolution text
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_shown record;
BEGIN
    INSERT INTO billing_invoices (
        id, customer_id, subscription_id, number, status, currency, amount_due, amount_paid,
        amount_remaining, total, total_excluding_tax, attempt_count, attempted,
        next_payment_attempt, due_date, hosted_invoice_url, livemode, raw, stripe_created,
        customer_email, customer_phone, customer_name, finalized_at, merge_attempt,
        merge_event_id, settled_at, settled_event_id, settled_resolution, stripe_updated_at,
        synced_at
    ) VALUES (
        p_invoice ->> 'id',
        p_invoice ->> 'customer_id',
        p_invoice ->> 'subscription_id',
        p_invoice ->> 'number',
        p_invoice ->> 'status',
        p_invoice ->> 'currency',
        (p_invoice ->> 'amount_due')::bigint,
        (p_invoice ->> 'amount_paid')::bigint,
        (p_invoice ->> 'amount_remaining')::bigint,
        (p_invoice ->> 'total')::bigint,
        (p_invoice ->> 'total_excluding_tax')::bigint,
        (p_invoice ->> 'attempt_count')::integer,
        (p_invoice ->> 'attempted')::boolean,
        (p_invoice ->> 'next_payment_attempt')::timestamptz,
        (p_invoice ->> 'due_date')::timestamptz,
        p_invoice ->> 'hosted_invoice_url',
        (p_invoice ->> 'livemode')::boolean,
        p_invoice -> 'raw',
        (p_invoice ->> 'stripe_created')::timestamptz,
        p_invoice ->> 'customer_email',
        p_invoice ->> 'customer_phone',
        p_invoice ->> 'customer_name',
        (p_invoice ->> 'finalized_at')::timestamptz,
        (p_invoice ->> 'attempt_count')::integer,
        p_event_id,
        CASE WHEN p_resolution IS NOT NULL THEN p_observed END,
        CASE WHEN p_resolution IS NOT NULL THEN p_event_id END,
        p_resolution,
        p_observed,
        p_now
    )
    ON CONFLICT (id) DO UPDATE SET
        -- Every column of the object shown, from the observation with the larger key.
        (customer_id, subscription_id, number, status, currency, amount_due, amount_paid,
         amount_remaining, total, total_excluding_tax, next_payment_attempt, due_date,
         hosted_invoice_url, livemode, raw, stripe_created, customer_email, customer_phone,
         customer_name, finalized_at, merge_attempt, merge_event_id, stripe_updated_at) = (
            SELECT (v).customer_id, (v).subscription_id, (v).number, (v).status, (v).currency,
                (v).amount_due, (v).amount_paid, (v).amount_remaining, (v).total,
                (v).total_excluding_tax, (v).next_payment_attempt, (v).due_date,
                (v).hosted_invoice_url, (v).livemode, (v).raw, (v).stripe_created,
                (v).customer_email, (v).customer_phone, (v).customer_name, (v).finalized_at,
                (v).merge_attempt, (v).merge_event_id, (v).stripe_updated_at
            FROM (SELECT CASE WHEN (
                    CASE excluded.status WHEN 'draft' THEN 0 WHEN 'open' THEN 1
                        WHEN 'uncollectible' THEN 2 WHEN 'void' THEN 3 WHEN 'paid' THEN 4 END,
                    excluded.stripe_updated_at, excluded.merge_attempt, excluded.merge_event_id
                ) > (
                    CASE billing_invoices.status WHEN 'draft' THEN 0 WHEN 'open' THEN 1
                        WHEN 'uncollectible' THEN 2 WHEN 'void' THEN 3 WHEN 'paid' THEN 4 END,
                    billing_invoices.stripe_updated_at, billing_invoices.merge_attempt,
                    billing_invoices.merge_event_id
                ) THEN excluded ELSE billing_invoices END AS v) AS shown
        ),
        attempt_count = greatest(excluded.attempt_count, billing_invoices.attempt_count),
        attempted = excluded.attempted OR billing_invoices.attempted,
        -- The earliest settling event, by (created, event id).
        (settled_at, settled_event_id, settled_resolution) = (
            SELECT (s).settled_at, (s).settled_event_id, (s).settled_resolution
            FROM (SELECT CASE WHEN excluded.settled_at IS NOT NULL AND (
                    billing_invoices.settled_at IS NULL
                    OR (excluded.settled_at, excluded.settled_event_id)
                        < (billing_invoices.settled_at, billing_invoices.settled_event_id)
                ) THEN excluded ELSE billing_invoices END AS s) AS earliest
        ),
        synced_at = excluded.synced_at
    RETURNING status, stripe_updated_at, merge_attempt, merge_event_id INTO v_shown;
    RETURN v_shown.status = p_invoice ->> 'status'
        AND v_shown.stripe_updated_at = p_observed
        AND v_shown.merge_attempt = (p_invoice ->> 'attempt_count')::integer
        AND v_shown.merge_event_id = p_event_id;
END
$$;

-- A subscription observation: shown when its key (terminal, event created, period end,
-- status rank, event id) is larger. Whether it is shown.
CREATE OR REPLACE FUNCTION billing_api_mirror_upsert_subscription(
    p_subscription jsonb, p_observed timestamptz, p_now timestamptz, p_event_id text
) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    WITH shown AS (
        INSERT INTO billing_subscriptions (
            id, customer_id, status, currency, cancel_at_period_end, current_period_end,
            collection_paused, livemode, raw, stripe_created, merge_event_id,
            stripe_updated_at, synced_at
        ) VALUES (
            p_subscription ->> 'id',
            p_subscription ->> 'customer_id',
            p_subscription ->> 'status',
            p_subscription ->> 'currency',
            (p_subscription ->> 'cancel_at_period_end')::boolean,
            (p_subscription ->> 'current_period_end')::timestamptz,
            (p_subscription ->> 'collection_paused')::boolean,
            (p_subscription ->> 'livemode')::boolean,
            p_subscription -> 'raw',
            (p_subscription ->> 'stripe_created')::timestamptz,
            p_event_id,
            p_observed,
            p_now
        )
        ON CONFLICT (id) DO UPDATE SET
            customer_id = excluded.customer_id, status = excluded.status,
            currency = excluded.currency, cancel_at_period_end = excluded.cancel_at_period_end,
            current_period_end = excluded.current_period_end,
            collection_paused = excluded.collection_paused, livemode = excluded.livemode,
            raw = excluded.raw, stripe_created = excluded.stripe_created,
            merge_event_id = excluded.merge_event_id,
            stripe_updated_at = excluded.stripe_updated_at, synced_at = excluded.synced_at
        WHERE (
            CASE WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN 1 ELSE 0 END,
            excluded.stripe_updated_at,
            COALESCE(excluded.current_period_end, excluded.stripe_updated_at),
            CASE excluded.status WHEN 'incomplete' THEN 0 WHEN 'trialing' THEN 1
                WHEN 'paused' THEN 2 WHEN 'past_due' THEN 3 WHEN 'unpaid' THEN 4
                WHEN 'active' THEN 5 WHEN 'incomplete_expired' THEN 6 WHEN 'canceled' THEN 7 END,
            excluded.merge_event_id
        ) > (
            CASE WHEN billing_subscriptions.status IN ('canceled', 'incomplete_expired')
                THEN 1 ELSE 0 END,
            billing_subscriptions.stripe_updated_at,
            COALESCE(billing_subscriptions.current_period_end,
                billing_subscriptions.stripe_updated_at),
            CASE billing_subscriptions.status WHEN 'incomplete' THEN 0 WHEN 'trialing' THEN 1
                WHEN 'paused' THEN 2 WHEN 'past_due' THEN 3 WHEN 'unpaid' THEN 4
                WHEN 'active' THEN 5 WHEN 'incomplete_expired' THEN 6 WHEN 'canceled' THEN 7 END,
            billing_subscriptions.merge_event_id
        )
        RETURNING id
    )
    SELECT EXISTS (SELECT 1 FROM shown)
$$;

-- A customer observation: shown when its key (deleted, event created, event id) is
-- larger. default_payment_method is schema 6's (null when the caller does not know it).
CREATE OR REPLACE FUNCTION billing_api_mirror_upsert_customer(
    p_customer jsonb, p_observed timestamptz, p_now timestamptz, p_event_id text
) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    WITH shown AS (
        INSERT INTO billing_customers (
            id, email, name, phone, currency, delinquent, deleted, livemode, raw,
            stripe_created, default_payment_method, merge_event_id, stripe_updated_at,
            synced_at
        ) VALUES (
            p_customer ->> 'id',
            p_customer ->> 'email',
            p_customer ->> 'name',
            p_customer ->> 'phone',
            p_customer ->> 'currency',
            (p_customer ->> 'delinquent')::boolean,
            (p_customer ->> 'deleted')::boolean,
            (p_customer ->> 'livemode')::boolean,
            p_customer -> 'raw',
            (p_customer ->> 'stripe_created')::timestamptz,
            p_customer ->> 'default_payment_method',
            p_event_id,
            p_observed,
            p_now
        )
        ON CONFLICT (id) DO UPDATE SET
            email = excluded.email, name = excluded.name, phone = excluded.phone,
            currency = excluded.currency, delinquent = excluded.delinquent,
            deleted = excluded.deleted, livemode = excluded.livemode, raw = excluded.raw,
            stripe_created = excluded.stripe_created,
            default_payment_method = excluded.default_payment_method,
            merge_event_id = excluded.merge_event_id,
            stripe_updated_at = excluded.stripe_updated_at, synced_at = excluded.synced_at
        WHERE (
            CASE WHEN excluded.deleted THEN 1 ELSE 0 END, excluded.stripe_updated_at,
            excluded.merge_event_id
        ) > (
            CASE WHEN billing_customers.deleted THEN 1 ELSE 0 END,
            billing_customers.stripe_updated_at, billing_customers.merge_event_id
        )
        RETURNING id
    )
    SELECT EXISTS (SELECT 1 FROM shown)
$$;

-- domain.mirror.with_known_discounts: events list a subscription's discounts by id only;
-- each id the subscription (or one of its items) lists is replaced by the expanded
-- discount the mirror already holds under that id (p_previous: the mirrored raw).
CREATE OR REPLACE FUNCTION billing_api_mirror_with_known_discounts(
    p_raw jsonb, p_previous jsonb
) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_known jsonb := '{}'::jsonb;
    v_holder jsonb;
    v_discount jsonb;
    v_merged jsonb;
BEGIN
    -- The subscription and its items: what can carry discounts (_discount_holders).
    FOR v_holder IN
        SELECT holder FROM (
            SELECT p_previous AS holder, 0::bigint AS n
            UNION ALL
            SELECT item, n FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(p_previous -> 'items' -> 'data') = 'array'
                     THEN p_previous -> 'items' -> 'data' ELSE '[]'::jsonb END
            ) WITH ORDINALITY AS items (item, n)
            WHERE jsonb_typeof(item) = 'object'
        ) AS holders
        ORDER BY n
    LOOP
        CONTINUE WHEN jsonb_typeof(v_holder -> 'discounts') IS DISTINCT FROM 'array';
        FOR v_discount IN
            SELECT d FROM jsonb_array_elements(v_holder -> 'discounts') WITH ORDINALITY AS t (d, n)
            ORDER BY n
        LOOP
            -- An expanded discount with a (truthy) id; a later one of an id wins.
            IF jsonb_typeof(v_discount) = 'object'
                AND coalesce(v_discount -> 'id', 'null') NOT IN
                    ('null', 'false', '0', '""', '[]', '{}') THEN
                v_known := v_known || jsonb_build_object(v_discount ->> 'id', v_discount);
            END IF;
        END LOOP;
    END LOOP;
    v_merged := billing_api_mirror_expand_discounts(p_raw, v_known);
    IF jsonb_typeof(p_raw -> 'items') = 'object'
        AND jsonb_typeof(p_raw -> 'items' -> 'data') = 'array' THEN
        v_merged := jsonb_set(v_merged, '{items}', (p_raw -> 'items') || jsonb_build_object(
            'data', (
                SELECT coalesce(jsonb_agg(
                    CASE WHEN jsonb_typeof(item) = 'object'
                         THEN billing_api_mirror_expand_discounts(item, v_known) ELSE item END
                    ORDER BY n), '[]'::jsonb)
                FROM jsonb_array_elements(p_raw -> 'items' -> 'data') WITH ORDINALITY
                    AS items (item, n)
            )
        ));
    END IF;
    RETURN v_merged;
END
$$;

-- One holder's discounts with each listed id replaced by the known discount.
CREATE OR REPLACE FUNCTION billing_api_mirror_expand_discounts(
    p_holder jsonb, p_known jsonb
) RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT CASE WHEN jsonb_typeof(p_holder -> 'discounts') = 'array' THEN
        jsonb_set(p_holder, '{discounts}', (
            SELECT coalesce(jsonb_agg(
                CASE WHEN jsonb_typeof(d) = 'string' AND p_known ? (d #>> '{}')
                     THEN p_known -> (d #>> '{}') ELSE d END
                ORDER BY n), '[]'::jsonb)
            FROM jsonb_array_elements(p_holder -> 'discounts') WITH ORDINALITY AS t (d, n)
        ))
    ELSE p_holder END
$$;

-- Whether the subscription lists a discount by its id (unexpanded_discount_ids): only
-- then is the mirrored one read.
CREATE OR REPLACE FUNCTION billing_api_mirror_lists_discount_ids(p_raw jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT jsonb_path_exists(p_raw, '$.discounts[*] ? (@.type() == "string")')
        OR jsonb_path_exists(p_raw, '$.items.data[*].discounts[*] ? (@.type() == "string")')
$$;

-- _raise_event_alert_in_tx: open or add to the alert a Stripe event (created at
-- p_created) raises. What it says comes from the event with the largest (attempt_count,
-- created, event id); the count never falls. With p_resolution (the invoice is settled):
-- add to the latest alert of the key, or open one already resolved with it.
CREATE OR REPLACE FUNCTION billing_api_mirror_raise_event_alert(
    p_alert jsonb, p_created timestamptz, p_now timestamptz, p_resolution text,
    OUT alert_id bigint, OUT opened boolean
)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_key text := p_alert ->> 'dedupe_key';
    v_attempt integer := coalesce((p_alert ->> 'attempt_count')::integer, 0);
    v_event text COLLATE "C" := p_alert ->> 'stripe_event_id';
    v_amount bigint := (p_alert ->> 'amount_due')::bigint;
    v_failure text := p_alert ->> 'last_failure';
    v_details jsonb := coalesce(p_alert -> 'details', '{}'::jsonb);
BEGIN
    IF p_resolution IS NULL THEN
        -- Most failures are an invoice's first: try to open the alert, then add to it.
        -- Twice at most: another worker may resolve it between the two statements.
        FOR attempt IN 1..2 LOOP
            INSERT INTO billing_alerts (
                type, status, dedupe_key, customer_id, invoice_id, amount_due, currency,
                stripe_event_id, stripe_event_created, attempt_count, last_failure, details,
                created_at, updated_at, resolved_at, resolution
            ) VALUES (
                p_alert ->> 'type', 'open', v_key, p_alert ->> 'customer_id',
                p_alert ->> 'invoice_id', v_amount, p_alert ->> 'currency', v_event, p_created,
                v_attempt, v_failure, v_details, p_now, p_now, NULL, NULL
            )
            ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING
            RETURNING id INTO alert_id;
            IF alert_id IS NOT NULL THEN
                opened := true;
                RETURN;
            END IF;
            UPDATE billing_alerts SET
                (amount_due, stripe_event_id, stripe_event_created, last_failure, details) = (
                    SELECT CASE WHEN later THEN v_amount ELSE amount_due END,
                        CASE WHEN later THEN v_event ELSE stripe_event_id END,
                        CASE WHEN later THEN p_created ELSE stripe_event_created END,
                        CASE WHEN later THEN v_failure ELSE last_failure END,
                        CASE WHEN later THEN v_details ELSE details END
                    FROM (SELECT stripe_event_created IS NULL
                        OR (v_attempt, p_created, v_event)
                            > (attempt_count, stripe_event_created, stripe_event_id) AS later
                    ) AS content),
                attempt_count = greatest(v_attempt, attempt_count),
                updated_at = p_now
            WHERE dedupe_key = v_key AND status <> 'resolved'
            RETURNING id INTO alert_id;
            IF alert_id IS NOT NULL THEN
                opened := false;
                RETURN;
            END IF;
        END LOOP;
        RAISE EXCEPTION USING ERRCODE = 'BLEVT',
            MESSAGE = format('RuntimeError: alert %s could be neither opened nor updated', v_key);
    END IF;
    UPDATE billing_alerts SET
        (amount_due, stripe_event_id, stripe_event_created, last_failure, details) = (
            SELECT CASE WHEN later THEN v_amount ELSE amount_due END,
                CASE WHEN later THEN v_event ELSE stripe_event_id END,
                CASE WHEN later THEN p_created ELSE stripe_event_created END,
                CASE WHEN later THEN v_failure ELSE last_failure END,
                CASE WHEN later THEN v_details ELSE details END
            FROM (SELECT stripe_event_created IS NULL
                OR (v_attempt, p_created, v_event)
                    > (attempt_count, stripe_event_created, stripe_event_id) AS later
            ) AS content),
        attempt_count = greatest(v_attempt, attempt_count),
        updated_at = p_now
    WHERE id = (SELECT max(id) FROM billing_alerts WHERE dedupe_key = v_key)
    RETURNING id INTO alert_id;
    IF alert_id IS NOT NULL THEN
        opened := false;
        RETURN;
    END IF;
    -- A resolved alert conflicts with none.
    INSERT INTO billing_alerts (
        type, status, dedupe_key, customer_id, invoice_id, amount_due, currency,
        stripe_event_id, stripe_event_created, attempt_count, last_failure, details,
        created_at, updated_at, resolved_at, resolution
    ) VALUES (
        p_alert ->> 'type', 'resolved', v_key, p_alert ->> 'customer_id',
        p_alert ->> 'invoice_id', v_amount, p_alert ->> 'currency', v_event, p_created,
        v_attempt, v_failure, v_details, p_now, p_now, p_now, p_resolution
    )
    RETURNING id INTO alert_id;
    opened := true;
END
$$;

-- _send_steps / _send_canceled_steps: insert an invoice's dunning steps, one per invoice,
-- day and channel (planning twice is a no-op); canceled with p_reason when given (the
-- steps of a failure whose invoice was settled before it arrived). How many were new.
-- p_steps: [{invoice_id, customer_id, alert_id, day, channel, template, due_at}].
CREATE OR REPLACE FUNCTION billing_api_mirror_insert_steps(
    p_steps jsonb, p_now timestamptz, p_reason text
) RETURNS integer
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    WITH inserted AS (
        INSERT INTO billing_dunning_events (
            invoice_id, customer_id, alert_id, day, channel, template, status, due_at,
            created_at, updated_at, reason
        )
        SELECT step ->> 'invoice_id', step ->> 'customer_id', (step ->> 'alert_id')::bigint,
            (step ->> 'day')::integer, step ->> 'channel', step ->> 'template',
            CASE WHEN p_reason IS NULL THEN 'scheduled' ELSE 'canceled' END,
            (step ->> 'due_at')::timestamptz, p_now, p_now, p_reason
        FROM jsonb_array_elements(p_steps) WITH ORDINALITY AS steps (step, n)
        ORDER BY n
        ON CONFLICT (invoice_id, day, channel) DO NOTHING
        RETURNING id
    )
    SELECT count(*)::integer FROM inserted
$$;

-- quarantine _quarantine_events_in_tx: keep a rejected event in quarantine (a redelivery
-- updates its row: seen once more, with the reason of the day, unless an operator settled
-- it); an event processed already (an earlier, good delivery) is a duplicate.
-- p_event: {dedupe_key, event_id, type, created, livemode, source, reason, payload}.
-- Its result: {event_id, created, status, error, quarantine_id}.
CREATE OR REPLACE FUNCTION billing_api_mirror_quarantine_event(
    p_event jsonb, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_id bigint;
    v_status text;
BEGIN
    IF p_event ->> 'event_id' IS NOT NULL AND EXISTS (
        SELECT 1 FROM billing_stripe_events WHERE id = p_event ->> 'event_id'
    ) THEN
        RETURN jsonb_build_object('event_id', p_event -> 'event_id',
            'created', p_event -> 'created', 'status', 'duplicate');
    END IF;
    INSERT INTO billing_quarantined_events (
        dedupe_key, event_id, type, stripe_created, livemode, source, reason, payload,
        first_seen_at, last_seen_at
    ) VALUES (
        p_event ->> 'dedupe_key', p_event ->> 'event_id', p_event ->> 'type',
        (p_event ->> 'created')::timestamptz, (p_event ->> 'livemode')::boolean,
        p_event ->> 'source', p_event ->> 'reason', p_event ->> 'payload', p_now, p_now
    )
    ON CONFLICT (dedupe_key) DO UPDATE SET
        times_seen = billing_quarantined_events.times_seen + 1,
        last_seen_at = excluded.last_seen_at,
        reason = CASE WHEN billing_quarantined_events.status = 'quarantined'
            THEN excluded.reason ELSE billing_quarantined_events.reason END
    RETURNING id, status INTO v_id, v_status;
    RETURN jsonb_build_object(
        'event_id', p_event -> 'event_id',
        'created', p_event -> 'created',
        'status', CASE WHEN v_status = 'quarantined' THEN 'quarantined' ELSE 'duplicate' END,
        'error', p_event -> 'reason',
        'quarantine_id', v_id
    );
END
$$;

-- failure_reason for a database error: psycopg's class name for the SQLSTATE, then the
-- message's first line (domain.quarantine.one_line), as the PostgreSQL store words it.
CREATE OR REPLACE FUNCTION billing_api_mirror_failure_reason(p_sqlstate text, p_message text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_name text := '{
        "22000": "DataException", "22001": "StringDataRightTruncation",
        "22002": "NullValueNoIndicatorParameter", "22003": "NumericValueOutOfRange",
        "22004": "NullValueNotAllowed", "22005": "ErrorInAssignment",
        "22007": "InvalidDatetimeFormat", "22008": "DatetimeFieldOverflow",
        "22009": "InvalidTimeZoneDisplacementValue", "2200B": "EscapeCharacterConflict",
        "2200C": "InvalidUseOfEscapeCharacter", "2200D": "InvalidEscapeOctet",
        "2200F": "ZeroLengthCharacterString", "2200G": "MostSpecificTypeMismatch",
        "2200H": "SequenceGeneratorLimitExceeded", "22010": "InvalidIndicatorParameterValue",
        "22011": "SubstringError", "22012": "DivisionByZero",
        "22015": "IntervalFieldOverflow", "22018": "InvalidCharacterValueForCast",
        "22019": "InvalidEscapeCharacter", "2201B": "InvalidRegularExpression",
        "22021": "CharacterNotInRepertoire", "22022": "IndicatorOverflow",
        "22023": "InvalidParameterValue", "22024": "UnterminatedCString",
        "22025": "InvalidEscapeSequence", "22026": "StringDataLengthMismatch",
        "22027": "TrimError", "2202E": "ArraySubscriptError",
        "22030": "DuplicateJsonObjectKeyValue", "22032": "InvalidJsonText",
        "22033": "InvalidSqlJsonSubscript", "22034": "MoreThanOneSqlJsonItem",
        "22035": "NoSqlJsonItem", "22036": "NonNumericSqlJsonItem",
        "22037": "NonUniqueKeysInAJsonObject", "22038": "SingletonSqlJsonItemRequired",
        "22039": "SqlJsonArrayNotFound", "2203A": "SqlJsonMemberNotFound",
        "2203B": "SqlJsonNumberNotFound", "2203C": "SqlJsonObjectNotFound",
        "2203D": "TooManyJsonArrayElements", "2203E": "TooManyJsonObjectMembers",
        "2203F": "SqlJsonScalarRequired", "22P01": "FloatingPointException",
        "22P02": "InvalidTextRepresentation", "22P03": "InvalidBinaryRepresentation",
        "22P05": "UntranslatableCharacter", "22P06": "NonstandardUseOfEscapeCharacter",
        "23000": "IntegrityConstraintViolation", "23001": "RestrictViolation",
        "23502": "NotNullViolation", "23503": "ForeignKeyViolation",
        "23505": "UniqueViolation", "23514": "CheckViolation", "23P01": "ExclusionViolation",
        "54000": "ProgramLimitExceeded", "54001": "StatementTooComplex",
        "54011": "TooManyColumns", "54023": "TooManyArguments"
    }'::jsonb ->> p_sqlstate;
BEGIN
    v_name := coalesce(v_name, CASE left(p_sqlstate, 2)
        WHEN '22' THEN 'DataError' WHEN '23' THEN 'IntegrityError' ELSE 'OperationalError' END);
    RETURN billing_api_mirror_one_line(
        rtrim(v_name || ': ' || billing_api_mirror_one_line(p_message), ': '));
END
$$;

-- domain.quarantine.one_line: the first line, control characters escaped (\x01), at most
-- 500 characters.
CREATE OR REPLACE FUNCTION billing_api_mirror_one_line(p_text text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_line text := btrim(coalesce(p_text, ''), E' \t\n\r\x0b\x0c');
BEGIN
    -- Python's str.splitlines breaks at these.
    v_line := (regexp_split_to_array(
        v_line, E'[\\n\\r\\x0b\\x0c\\x1c\\x1d\\x1e\\u0085\\u2028\\u2029]'))[1];
    IF v_line ~ E'[\\x01-\\x1f\\x7f]' THEN
        FOR code IN 1..127 LOOP
            CONTINUE WHEN code BETWEEN 32 AND 126;
            v_line := replace(v_line, chr(code), '\x' || lpad(to_hex(code), 2, '0'));
        END LOOP;
    END IF;
    IF length(v_line) > 500 THEN
        v_line := left(v_line, 499) || '…';
    END IF;
    RETURN v_line;
END
$$;

-- One event's effects (_send_event_in_tx, _send_event_alert, _finish_event_in_tx), the
-- event just recorded as processed by the caller, merged by domain.merge's rules so that
-- the order of events does not matter. Its result: {status, alerts_opened,
-- alerts_resolved, dunning_scheduled, dunning_canceled}. A fault of the event raises (a
-- constraint, a value out of range, SQLSTATE BLEVT); the caller rolls it back alone.
--
-- p_plan: {event_id, type, created, livemode, source, outcome, invoice, subscription,
-- customer, failure, alert, resolve: [invoice id, resolution], steps, refused,
-- planner_error, quarantine}; steps: the planner's steps for the invoice's failure as
-- [{invoice_id, customer_id, alert_id, of_alert, day, channel, template, delay}], due
-- ``delay`` (microseconds) after the invoice's first failure, with the alert's id when
-- of_alert.
CREATE OR REPLACE FUNCTION billing_api_mirror_apply_plan(p_plan jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_event text COLLATE "C" := p_plan ->> 'event_id';
    v_created timestamptz := (p_plan ->> 'created')::timestamptz;
    v_invoice jsonb := nullif(p_plan -> 'invoice', 'null');
    v_invoice_id text := p_plan -> 'invoice' ->> 'id';
    v_customer jsonb := nullif(p_plan -> 'customer', 'null');
    v_subscription jsonb := nullif(p_plan -> 'subscription', 'null');
    v_failure jsonb := nullif(p_plan -> 'failure', 'null');
    v_alert jsonb := nullif(p_plan -> 'alert', 'null');
    v_settles text := p_plan -> 'resolve' ->> 0;
    v_resolution text := p_plan -> 'resolve' ->> 1;
    v_attempt integer;
    v_status text;
    v_settled_by text;
    v_settled boolean;
    v_first_failed timestamptz;
    v_alert_resolution text;
    v_alert_id bigint;
    v_is_new boolean;
    v_steps jsonb;
    v_step jsonb;
    v_opened bigint[] := '{}';
    v_resolved bigint[] := '{}';
    v_scheduled integer := 0;
    v_canceled integer := 0;
    v_count integer;
    v_actor text := 'stripe:' || (p_plan ->> 'source');
    v_audit jsonb := jsonb_build_object('event', p_plan -> 'event_id', 'type', p_plan -> 'type');
BEGIN
    IF p_plan ->> 'outcome' = 'skipped' THEN
        RETURN jsonb_build_object('status', 'skipped');
    END IF;
    IF p_plan ->> 'refused' IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'BLEVT', MESSAGE = p_plan ->> 'refused';
    END IF;
    IF v_customer IS NOT NULL THEN
        PERFORM billing_api_mirror_upsert_customer(v_customer, v_created, p_now, v_event);
    END IF;
    IF v_subscription IS NOT NULL THEN
        -- Events list discounts by id only: keep the expanded ones the mirror has.
        IF billing_api_mirror_lists_discount_ids(v_subscription -> 'raw') THEN
            v_subscription := jsonb_set(v_subscription, '{raw}', coalesce((
                SELECT billing_api_mirror_with_known_discounts(v_subscription -> 'raw', raw)
                FROM billing_subscriptions WHERE id = v_subscription ->> 'id'
            ), v_subscription -> 'raw'));
        END IF;
        PERFORM billing_api_mirror_upsert_subscription(v_subscription, v_created, p_now, v_event);
    END IF;
    IF v_invoice IS NOT NULL THEN
        IF v_resolution IS NOT NULL THEN
            -- The invoice's row lock first: a settlement another worker commits meanwhile
            -- is then seen by the relabelling. An earlier settling event, delivered
            -- later, takes the credit for what the later one settled first.
            UPDATE billing_invoices SET settled_at = settled_at WHERE id = v_invoice_id;
            UPDATE billing_alerts SET resolution = v_resolution, updated_at = p_now
            WHERE invoice_id = v_invoice_id AND status = 'resolved' AND resolution = (
                SELECT settled_resolution FROM billing_invoices WHERE id = v_invoice_id
                AND (settled_at, settled_event_id) > (v_created, v_event));
            UPDATE billing_dunning_events SET reason = v_resolution, updated_at = p_now
            WHERE invoice_id = v_invoice_id AND status = 'canceled' AND reason = (
                SELECT settled_resolution FROM billing_invoices WHERE id = v_invoice_id
                AND (settled_at, settled_event_id) > (v_created, v_event));
        END IF;
        PERFORM billing_api_mirror_upsert_invoice(v_invoice, v_created, p_now, v_event,
            v_resolution);
        IF v_failure IS NOT NULL THEN
            -- The earliest failure is kept (dunning counts from it); the last failure's
            -- details are those of the largest (attempt_count, created, carries a
            -- decline, event id), as in adapters/store/sql_mirror.py (domain.merge).
            v_attempt := (v_invoice ->> 'attempt_count')::integer;
            UPDATE billing_invoices SET
                first_failed_at = CASE WHEN first_failed_at IS NULL
                    OR first_failed_at > v_created THEN v_created ELSE first_failed_at END,
                (last_failure_code, last_failure_message, last_decline_code, last_advice_code,
                 last_failure_payment_method, last_failure_attempt, last_failure_at,
                 last_failure_event_id) = (
                    SELECT CASE WHEN later THEN v_failure ->> 'code' ELSE last_failure_code END,
                        CASE WHEN later THEN v_failure ->> 'message'
                            ELSE last_failure_message END,
                        CASE WHEN later THEN v_failure ->> 'decline_code'
                            ELSE last_decline_code END,
                        CASE WHEN later THEN v_failure ->> 'advice_code'
                            ELSE last_advice_code END,
                        CASE WHEN later THEN v_failure ->> 'payment_method'
                            ELSE last_failure_payment_method END,
                        CASE WHEN later THEN v_attempt ELSE last_failure_attempt END,
                        CASE WHEN later THEN v_created ELSE last_failure_at END,
                        CASE WHEN later THEN v_event ELSE last_failure_event_id END
                    FROM (SELECT last_failure_at IS NULL
                        OR (v_attempt, v_created,
                            CASE WHEN v_failure ->> 'decline_code' IS NOT NULL
                                OR v_failure ->> 'advice_code' IS NOT NULL THEN 1 ELSE 0 END,
                            v_event)
                            > (last_failure_attempt, last_failure_at,
                               CASE WHEN last_decline_code IS NOT NULL
                                   OR last_advice_code IS NOT NULL THEN 1 ELSE 0 END,
                               last_failure_event_id)
                        AS later) AS failure)
            WHERE id = v_invoice_id
            RETURNING status, first_failed_at, settled_resolution
            INTO v_status, v_first_failed, v_settled_by;
        ELSIF v_alert IS NOT NULL THEN
            SELECT status, settled_resolution INTO v_status, v_settled_by
            FROM billing_invoices WHERE id = v_invoice_id;
        END IF;
    END IF;
    -- Settled as far as a listing knows, by no event of ours: nothing to resolve the alert
    -- with, and a settled invoice is never reopened.
    v_settled := coalesce(v_status IN ('paid', 'void', 'uncollectible'), false);
    IF v_alert IS NOT NULL AND NOT (v_settled AND v_settled_by IS NULL) THEN
        -- A failure of a settled invoice adds to the alert its settlement resolved, or
        -- opens one already resolved, with its steps canceled.
        v_alert_resolution := CASE WHEN v_settled THEN v_settled_by END;
        SELECT raised.alert_id, raised.opened INTO v_alert_id, v_is_new
        FROM billing_api_mirror_raise_event_alert(v_alert, v_created, p_now,
            v_alert_resolution) AS raised;
        IF v_is_new THEN
            v_opened := v_opened || v_alert_id;
            IF v_alert_resolution IS NOT NULL THEN
                v_resolved := v_resolved || v_alert_id;
            END IF;
        END IF;
        IF v_alert ->> 'type' = 'invoice_failed' AND v_invoice IS NOT NULL THEN
            IF v_first_failed IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'BLEVT',
                    MESSAGE = 'AssertionError: an invoice_failed alert without its failure';
            END IF;
            IF p_plan ->> 'planner_error' IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'BLEVT', MESSAGE = p_plan ->> 'planner_error';
            END IF;
            -- The planner's steps, from the invoice's first failure, for this alert.
            -- The delay in microseconds, never days: a day is 24 hours whatever the
            -- session's time zone (timedelta's arithmetic).
            SELECT coalesce(jsonb_agg((step - 'of_alert' - 'delay') || jsonb_build_object(
                    'alert_id', CASE WHEN (step ->> 'of_alert')::boolean
                        THEN to_jsonb(v_alert_id) ELSE step -> 'alert_id' END,
                    'due_at', v_first_failed
                        + ((step ->> 'delay') || ' microseconds')::interval)
                    ORDER BY n), '[]'::jsonb)
            INTO v_steps
            FROM jsonb_array_elements(coalesce(p_plan -> 'steps', '[]'::jsonb))
                WITH ORDINALITY AS steps (step, n);
            IF v_is_new THEN
                v_count := billing_api_mirror_insert_steps(v_steps, p_now, v_alert_resolution);
                IF v_alert_resolution IS NULL THEN
                    v_scheduled := v_count;
                ELSE
                    v_canceled := v_canceled + v_count;
                END IF;
            ELSIF v_first_failed = v_created THEN
                -- An older failure, delivered late, moved the first failure earlier: steps
                -- not acted on yet move earlier too, as if events had come in order.
                FOR v_step IN
                    SELECT step FROM jsonb_array_elements(v_steps) WITH ORDINALITY AS s (step, n)
                    ORDER BY n
                LOOP
                    UPDATE billing_dunning_events SET
                        due_at = (v_step ->> 'due_at')::timestamptz, updated_at = p_now
                    WHERE invoice_id = v_step ->> 'invoice_id'
                        AND day = (v_step ->> 'day')::integer
                        AND channel = v_step ->> 'channel'
                        AND status IN ('scheduled', 'canceled')
                        AND due_at > (v_step ->> 'due_at')::timestamptz;
                END LOOP;
            END IF;
        END IF;
    END IF;
    IF v_resolution IS NOT NULL THEN
        -- Settling the invoice resolves its alerts and cancels its pending steps, with the
        -- resolution of its earliest settling event.
        WITH resolved AS (
            UPDATE billing_alerts SET status = 'resolved', resolved_at = p_now,
                resolution = (SELECT settled_resolution FROM billing_invoices
                              WHERE id = v_settles),
                updated_at = p_now
            WHERE invoice_id = v_settles AND status <> 'resolved'
            RETURNING id
        )
        SELECT v_resolved || coalesce(array_agg(id ORDER BY id), '{}') INTO v_resolved
        FROM resolved;
        WITH canceled AS (
            UPDATE billing_dunning_events SET status = 'canceled',
                reason = (SELECT settled_resolution FROM billing_invoices
                          WHERE id = v_settles),
                lease_expires_at = NULL, updated_at = p_now
            WHERE invoice_id = v_settles AND status IN ('scheduled', 'sending', 'failed')
            RETURNING id
        )
        SELECT v_canceled + count(*) INTO v_canceled FROM canceled;
    END IF;
    -- The audit lines, beside the changes they record.
    INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
    SELECT p_now, v_actor, action, 'alert:' || alert_id, outcome, v_audit
    FROM (
        SELECT 'alert.open' AS action, 'opened' AS outcome, alert_id, 1 AS part, n
        FROM unnest(v_opened) WITH ORDINALITY AS o (alert_id, n)
        UNION ALL
        SELECT 'alert.resolve', 'resolved', alert_id, 2, n
        FROM unnest(v_resolved) WITH ORDINALITY AS r (alert_id, n)
    ) AS lines
    ORDER BY part, n;
    RETURN jsonb_build_object(
        'status', 'applied',
        'alerts_opened', cardinality(v_opened),
        'alerts_resolved', cardinality(v_resolved),
        'dunning_scheduled', v_scheduled,
        'dunning_canceled', v_canceled
    );
END
$$;

-- One event recorded as processed and applied, or a duplicate when it was processed
-- before ({status: duplicate}); raises on a fault of the event, which the caller rolls back
-- alone (BEGIN … EXCEPTION, as _apply_in_savepoint) and quarantines with
-- billing_api_mirror_failure_reason (or, for SQLSTATE BLEVT, the message itself).
CREATE OR REPLACE FUNCTION billing_api_mirror_apply_event(p_plan jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO billing_stripe_events (
        id, type, stripe_created, livemode, outcome, source, processed_at
    ) VALUES (
        p_plan ->> 'event_id', p_plan ->> 'type', (p_plan ->> 'created')::timestamptz,
        (p_plan ->> 'livemode')::boolean, p_plan ->> 'outcome', p_plan ->> 'source', p_now
    )
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('status', 'duplicate');
    END IF;
    RETURN billing_api_mirror_apply_plan(p_plan, p_now);
END
$$;

-- MirrorOps.apply_event_plans: a batch of events in one transaction, each with the record
-- that it was processed (billing_stripe_events), then the rejected events (ones that
-- could not be planned) quarantined. One result per plan, in order, then one per
-- rejected event: {status, alerts_opened, …} for a plan applied, {status} for a duplicate
-- or skipped one, {event_id, created, status, error, quarantine_id} for one quarantined.
--
-- Fast path: every event recorded by one statement up front (in id order, so that
-- concurrent batches take the rows' locks in the same order), then each applied. A fault
-- of an event (SQLSTATE classes 22, 23, 54, or BLEVT) rolls that attempt back whole, and
-- the batch is redone with one subtransaction per event, so that only the failing events
-- are left out, quarantined with their reason in the same transaction. Any other error
-- (a serialization failure, a lock or statement timeout) is the store's: it fails the
-- call, and nothing of the batch is written; the caller may retry.
CREATE OR REPLACE FUNCTION billing_api_apply_event_plans(
    p_plans jsonb, p_rejected jsonb, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_results jsonb[] := '{}';
    v_plan jsonb;
    v_n integer;
    v_fresh boolean[];
    v_any_fresh boolean;
    v_rejected jsonb;
    v_state text;
    v_message text;
BEGIN
    BEGIN
        -- For each plan, whether it is new: the first of its id in the batch, and not
        -- processed before.
        WITH firsts AS (
            SELECT DISTINCT ON (plan ->> 'event_id') plan, n
            FROM jsonb_array_elements(p_plans) WITH ORDINALITY AS plans (plan, n)
            ORDER BY plan ->> 'event_id', n
        ), recorded AS (
            INSERT INTO billing_stripe_events (
                id, type, stripe_created, livemode, outcome, source, processed_at
            )
            SELECT plan ->> 'event_id', plan ->> 'type', (plan ->> 'created')::timestamptz,
                (plan ->> 'livemode')::boolean, plan ->> 'outcome', plan ->> 'source', p_now
            FROM firsts ORDER BY (plan ->> 'event_id') COLLATE "C"
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        )
        SELECT array_agg(recorded.id IS NOT NULL ORDER BY plans.n),
            bool_or(recorded.id IS NOT NULL)
        INTO v_fresh, v_any_fresh
        FROM jsonb_array_elements(p_plans) WITH ORDINALITY AS plans (plan, n)
        LEFT JOIN firsts ON firsts.n = plans.n
        LEFT JOIN recorded ON recorded.id = firsts.plan ->> 'event_id';
        FOR v_plan, v_n IN
            SELECT plan, n::integer
            FROM jsonb_array_elements(p_plans) WITH ORDINALITY AS plans (plan, n)
            ORDER BY n
        LOOP
            IF v_fresh[v_n] THEN
                v_results := array_append(v_results,
                    billing_api_mirror_apply_plan(v_plan, p_now));
            ELSE
                v_results := array_append(v_results,
                    jsonb_build_object('status', 'duplicate'));
            END IF;
        END LOOP;
        FOR v_rejected IN
            SELECT event FROM jsonb_array_elements(p_rejected) WITH ORDINALITY AS r (event, n)
            ORDER BY n
        LOOP
            v_results := array_append(v_results,
            billing_api_mirror_quarantine_event(v_rejected, p_now));
        END LOOP;
        IF v_any_fresh THEN
            PERFORM billing_api_mirror_settle_redelivered(p_now);
        END IF;
        RETURN to_jsonb(v_results);
    EXCEPTION
        WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded
            OR SQLSTATE 'BLEVT' THEN
            NULL;  -- an event's fault: redone below, one subtransaction per event
    END;
    v_results := '{}';
    FOR v_plan IN
        SELECT plan FROM jsonb_array_elements(p_plans) WITH ORDINALITY AS plans (plan, n)
        ORDER BY n
    LOOP
        BEGIN
            v_results := array_append(v_results, billing_api_mirror_apply_event(v_plan, p_now));
        EXCEPTION
            WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded
                OR SQLSTATE 'BLEVT' THEN
                -- The event's own fault: rolled back alone, and kept for an operator.
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
                v_results := array_append(v_results, billing_api_mirror_quarantine_event(
                    (v_plan -> 'quarantine') || jsonb_build_object('reason',
                        CASE WHEN v_state = 'BLEVT' THEN v_message
                             ELSE billing_api_mirror_failure_reason(v_state, v_message) END),
                    p_now));
        END;
    END LOOP;
    FOR v_rejected IN
        SELECT event FROM jsonb_array_elements(p_rejected) WITH ORDINALITY AS r (event, n)
        ORDER BY n
    LOOP
        v_results := array_append(v_results,
            billing_api_mirror_quarantine_event(v_rejected, p_now));
    END LOOP;
    PERFORM billing_api_mirror_settle_redelivered(p_now);
    RETURN to_jsonb(v_results);
END
$$;

-- Events applied since they were quarantined (a fixed delivery from another source)
-- leave quarantine.
CREATE OR REPLACE FUNCTION billing_api_mirror_settle_redelivered(p_now timestamptz)
RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    UPDATE billing_quarantined_events SET status = 'applied', resolved_at = p_now,
        resolved_by = 'stripe', resolution = 'applied when delivered again'
    WHERE status = 'quarantined' AND EXISTS (
        SELECT 1 FROM billing_stripe_events
        WHERE billing_stripe_events.id = billing_quarantined_events.event_id)
$$;

-- MirrorOps.upsert_invoices (and upsert_invoice): listed invoices, merged, in one
-- transaction; how many rows now show the observation.
CREATE OR REPLACE FUNCTION billing_api_upsert_invoices(
    p_invoices jsonb, p_observed timestamptz, p_now timestamptz
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_invoice jsonb;
    v_changed integer := 0;
BEGIN
    FOR v_invoice IN
        SELECT invoice FROM jsonb_array_elements(p_invoices) WITH ORDINALITY AS i (invoice, n)
        ORDER BY n
    LOOP
        IF billing_api_mirror_upsert_invoice(v_invoice, p_observed, p_now, '', NULL) THEN
            v_changed := v_changed + 1;
        END IF;
    END LOOP;
    RETURN v_changed;
END
$$;

-- MirrorOps.upsert_subscription, upsert_customer: a listed object (no event).
CREATE OR REPLACE FUNCTION billing_api_upsert_subscription(
    p_subscription jsonb, p_observed timestamptz, p_now timestamptz
) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT billing_api_mirror_upsert_subscription(p_subscription, p_observed, p_now, '')
$$;

CREATE OR REPLACE FUNCTION billing_api_upsert_customer(
    p_customer jsonb, p_observed timestamptz, p_now timestamptz
) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT billing_api_mirror_upsert_customer(p_customer, p_observed, p_now, '')
$$;

-- The mirrored rows, whole (null when there is none).
CREATE OR REPLACE FUNCTION billing_api_get_invoice(p_id text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(i) FROM billing_invoices AS i WHERE id = p_id
$$;

CREATE OR REPLACE FUNCTION billing_api_get_customer(p_id text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(c) FROM billing_customers AS c WHERE id = p_id
$$;

CREATE OR REPLACE FUNCTION billing_api_get_subscription(p_id text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(s) FROM billing_subscriptions AS s WHERE id = p_id
$$;

CREATE OR REPLACE FUNCTION billing_api_event_processed(p_event_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM billing_stripe_events WHERE id = p_event_id)
$$;

-- When the newest processed event was applied (any source); null before the first.
CREATE OR REPLACE FUNCTION billing_api_last_event_processed_at() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT max(processed_at) FROM billing_stripe_events
$$;

-- ==== end section: mirror ====

-- ==== section: quarantine, drift, actions (adapters/store/supabase/operations.py) ====

-- Helpers of this section (billing_api_ops_*), called inside the functions below, in
-- their transaction. Each ports one statement of the SQL stores, named where it comes from.

-- An audit line beside the change it records (sql_audit.AuditSql._insert_audit).
-- p_audit: {actor, action, target, outcome, idempotency_key, details}.
CREATE OR REPLACE FUNCTION billing_api_ops_audit(p_audit jsonb, p_now timestamptz)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    INSERT INTO billing_audit_log
        (occurred_at, actor, action, target, outcome, idempotency_key, details)
    VALUES (p_now, p_audit->>'actor', p_audit->>'action', p_audit->>'target',
            p_audit->>'outcome', p_audit->>'idempotency_key',
            coalesce(p_audit->'details', '{}'::jsonb))
    RETURNING id
$$;

-- A note on an alert, with its audit line; false when there is no such alert
-- (sql_alerts.AlertsSql.add_alert_note).
CREATE OR REPLACE FUNCTION billing_api_ops_add_note(
    p_alert_id bigint, p_author text, p_body text, p_now timestamptz
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE billing_alerts SET updated_at = p_now WHERE id = p_alert_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO billing_alert_notes (alert_id, author, body, created_at)
    VALUES (p_alert_id, p_author, p_body, p_now);
    PERFORM billing_api_ops_audit(jsonb_build_object(
        'actor', p_author, 'action', 'alert.note', 'target', 'alert:' || p_alert_id,
        'outcome', 'noted'), p_now);
    RETURN true;
END
$$;

-- Resolve the invoice's unresolved alerts and cancel its pending dunning steps, with an
-- audit line per alert resolved (sql_alerts.AlertsSql.resolve_invoice_alerts, with
-- sql_dunning's CANCEL_PENDING): {"resolved": [alert ids, in order], "canceled": n}.
CREATE OR REPLACE FUNCTION billing_api_ops_resolve_invoice(
    p_invoice_id text, p_resolution text, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    resolved bigint[];
    canceled integer;
    alert_id bigint;
BEGIN
    WITH done AS (
        UPDATE billing_alerts SET status = 'resolved', resolved_at = p_now,
            resolution = p_resolution, updated_at = p_now
        WHERE invoice_id = p_invoice_id AND status <> 'resolved' RETURNING id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO resolved FROM done;
    -- Steps in 'sending' too: the run holding one confirms it just before handing the
    -- message over, so the cancellation stops the send (domain.statuses.PENDING_STATUSES).
    UPDATE billing_dunning_events SET status = 'canceled', reason = p_resolution,
        lease_expires_at = NULL, updated_at = p_now
    WHERE invoice_id = p_invoice_id AND status IN ('scheduled', 'sending', 'failed');
    GET DIAGNOSTICS canceled = ROW_COUNT;
    FOREACH alert_id IN ARRAY resolved LOOP
        PERFORM billing_api_ops_audit(jsonb_build_object(
            'actor', p_actor, 'action', 'alert.resolve', 'target', 'alert:' || alert_id,
            'outcome', 'resolved', 'details', jsonb_build_object('resolution', p_resolution)
        ), p_now);
    END LOOP;
    RETURN jsonb_build_object('resolved', to_jsonb(resolved), 'canceled', canceled);
END
$$;

-- Stripe's current invoice as observed now, by no event (a retry's answer, the drift
-- check's read): sql_mirror's UPSERT_INVOICE with observed_at = now and event id ''
-- (domain.merge.NO_EVENT). The columns shown come from the observation with the larger
-- (status rank, observed, attempt_count, event id); attempt_count and attempted never
-- fall; a settlement is never made here, so the settled_ columns stay as they are. The
-- row lock is taken before comparing, as the upsert's ON CONFLICT takes it.
CREATE OR REPLACE FUNCTION billing_api_ops_observe_invoice(p_invoice jsonb, p_now timestamptz)
RETURNS billing_invoices
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    seen billing_invoices := jsonb_populate_record(NULL::billing_invoices, p_invoice);
    cur billing_invoices;
    newer boolean;
BEGIN
    INSERT INTO billing_invoices (id, customer_id, subscription_id, number, status, currency,
        amount_due, amount_paid, amount_remaining, total, total_excluding_tax, attempt_count,
        attempted, next_payment_attempt, due_date, hosted_invoice_url, livemode, raw,
        stripe_created, customer_email, customer_phone, customer_name, finalized_at,
        merge_attempt, merge_event_id, stripe_updated_at, synced_at)
    VALUES (seen.id, seen.customer_id, seen.subscription_id, seen.number, seen.status,
        seen.currency, seen.amount_due, seen.amount_paid, seen.amount_remaining, seen.total,
        seen.total_excluding_tax, seen.attempt_count, seen.attempted,
        seen.next_payment_attempt, seen.due_date, seen.hosted_invoice_url, seen.livemode,
        seen.raw, seen.stripe_created, seen.customer_email, seen.customer_phone,
        seen.customer_name, seen.finalized_at, seen.attempt_count, '', p_now, p_now)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO cur;
    IF FOUND THEN
        RETURN cur;
    END IF;
    SELECT * INTO STRICT cur FROM billing_invoices WHERE id = seen.id FOR UPDATE;
    -- domain.merge.INVOICE_STATUS_RANK
    newer := (CASE seen.status WHEN 'draft' THEN 0 WHEN 'open' THEN 1
                  WHEN 'uncollectible' THEN 2 WHEN 'void' THEN 3 WHEN 'paid' THEN 4 END,
              p_now, seen.attempt_count, ''::text COLLATE "C")
           > (CASE cur.status WHEN 'draft' THEN 0 WHEN 'open' THEN 1
                  WHEN 'uncollectible' THEN 2 WHEN 'void' THEN 3 WHEN 'paid' THEN 4 END,
              cur.stripe_updated_at, cur.merge_attempt, cur.merge_event_id COLLATE "C");
    IF newer THEN
        UPDATE billing_invoices SET customer_id = seen.customer_id,
            subscription_id = seen.subscription_id, number = seen.number,
            status = seen.status, currency = seen.currency, amount_due = seen.amount_due,
            amount_paid = seen.amount_paid, amount_remaining = seen.amount_remaining,
            total = seen.total, total_excluding_tax = seen.total_excluding_tax,
            next_payment_attempt = seen.next_payment_attempt, due_date = seen.due_date,
            hosted_invoice_url = seen.hosted_invoice_url, livemode = seen.livemode,
            raw = seen.raw, stripe_created = seen.stripe_created,
            customer_email = seen.customer_email, customer_phone = seen.customer_phone,
            customer_name = seen.customer_name, finalized_at = seen.finalized_at,
            merge_attempt = seen.attempt_count, merge_event_id = '',
            stripe_updated_at = p_now
        WHERE id = seen.id;
    END IF;
    UPDATE billing_invoices SET
        attempt_count = greatest(attempt_count, seen.attempt_count),
        attempted = attempted OR seen.attempted,
        synced_at = p_now
    WHERE id = seen.id
    RETURNING * INTO cur;
    RETURN cur;
END
$$;

-- quarantine list: rows in p_statuses (a JSON array; null: all), of one event or after
-- an id when given, oldest first (ids grow with each new row), a page at a time.
CREATE OR REPLACE FUNCTION billing_api_list_quarantined(
    p_statuses jsonb, p_event_id text, p_after bigint, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(q) ORDER BY q.id), '[]'::jsonb)
    FROM (
        SELECT * FROM billing_quarantined_events
        WHERE (p_statuses IS NULL
               OR status IN (SELECT jsonb_array_elements_text(p_statuses)))
          AND (p_event_id IS NULL OR event_id = p_event_id)
          AND (p_after IS NULL OR id > p_after)
        ORDER BY id
        LIMIT p_limit
    ) q
$$;

CREATE OR REPLACE FUNCTION billing_api_get_quarantined(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(q) FROM billing_quarantined_events q WHERE id = p_id
$$;

-- Counted in SQL: a count is one number, never a page of rows.
CREATE OR REPLACE FUNCTION billing_api_count_quarantined(p_statuses jsonb) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_quarantined_events
    WHERE p_statuses IS NULL OR status IN (SELECT jsonb_array_elements_text(p_statuses))
$$;

-- quarantine dismiss, with its audit line (sql_quarantine.dismiss_quarantined). The row
-- lock first, so two operators settle one row one after the other. A missing or settled
-- row writes nothing and says so: {"outcome": "not_found" | "already_settled", "status"}.
CREATE OR REPLACE FUNCTION billing_api_dismiss_quarantined(
    p_id bigint, p_reason text, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    found_status text;
    settled billing_quarantined_events;
BEGIN
    SELECT status INTO found_status FROM billing_quarantined_events WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'not_found');
    END IF;
    IF found_status <> 'quarantined' THEN
        RETURN jsonb_build_object('outcome', 'already_settled', 'status', found_status);
    END IF;
    UPDATE billing_quarantined_events SET status = 'dismissed', resolved_at = p_now,
        resolved_by = p_actor, resolution = coalesce(p_reason, 'dismissed')
    WHERE id = p_id
    RETURNING * INTO settled;
    PERFORM billing_api_ops_audit(jsonb_build_object(
        'actor', p_actor, 'action', 'quarantine.dismiss', 'target', 'quarantine:' || p_id,
        'outcome', 'dismissed', 'details', jsonb_build_object('reason', p_reason)), p_now);
    RETURN jsonb_build_object('outcome', 'dismissed', 'row', to_jsonb(settled));
END
$$;

-- quarantine retry (sql_quarantine.retry_quarantined), in one transaction: the row locked
-- (two operators settle it one after the other), the event's plan applied as
-- billing_api_apply_event_plans applies one event (the mirror's
-- billing_api_mirror_apply_event: recorded as processed, then applied; an event processed
-- meanwhile is a duplicate), inside a subtransaction so that a fault of the event rolls back only its own work; the
-- row settled with the outcome; the audit line. p_plan is null when the payload could not
-- be planned: p_reason says why, and the row stays quarantined with it. Answers the
-- mirror's result ({status, alerts_opened, …}) with the reason a row kept in quarantine
-- has ("error"), or {"status": "not_found"}.
CREATE OR REPLACE FUNCTION billing_api_retry_quarantined(
    p_id bigint, p_event_id text, p_plan jsonb, p_reason text, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_result jsonb := jsonb_build_object('status', 'quarantined');
    v_reason text := p_reason;
    v_state text;
    v_message text;
BEGIN
    PERFORM 1 FROM billing_quarantined_events WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('status', 'not_found');
    END IF;
    IF p_plan IS NOT NULL THEN
        BEGIN
            v_result := billing_api_mirror_apply_event(p_plan, p_now);
        EXCEPTION
            -- The event's own fault, as billing_api_apply_event_plans tells it from the
            -- store's (which fails the call, and nothing is written).
            WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded
                OR SQLSTATE 'BLEVT' THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
                v_reason := CASE WHEN v_state = 'BLEVT' THEN v_message
                                 ELSE billing_api_mirror_failure_reason(v_state, v_message) END;
                v_result := jsonb_build_object('status', 'quarantined');
        END;
    END IF;
    IF v_result ->> 'status' = 'quarantined' THEN
        UPDATE billing_quarantined_events SET status = 'quarantined', reason = v_reason,
            resolved_at = NULL, resolved_by = NULL, resolution = NULL
        WHERE id = p_id;
        v_result := v_result || jsonb_build_object('error', v_reason);
    ELSE
        v_reason := NULL;
        UPDATE billing_quarantined_events SET status = 'applied', resolved_at = p_now,
            resolved_by = p_actor,
            resolution = CASE WHEN v_result ->> 'status' = 'duplicate'
                              THEN 'already processed' ELSE 'applied by retry' END
        WHERE id = p_id;
    END IF;
    PERFORM billing_api_ops_audit(jsonb_build_object(
        'actor', p_actor, 'action', 'quarantine.retry', 'target', 'quarantine:' || p_id,
        'outcome', v_result ->> 'status',
        'details', jsonb_build_object('event', p_event_id, 'reason', v_reason)), p_now);
    RETURN v_result;
END
$$;

-- sync --verify: the mirror's invoices Stripe created in [p_since, p_until), by id, a
-- page at a time.
CREATE OR REPLACE FUNCTION billing_api_mirrored_invoices_created(
    p_since timestamptz, p_until timestamptz, p_after text, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.id), '[]'::jsonb)
    FROM (
        SELECT * FROM billing_invoices
        WHERE stripe_created >= p_since AND stripe_created < p_until
          AND (p_after IS NULL OR id > p_after)
        ORDER BY id
        LIMIT p_limit
    ) i
$$;

CREATE OR REPLACE FUNCTION billing_api_mirrored_subscriptions(p_after text, p_limit integer)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.id), '[]'::jsonb)
    FROM (
        SELECT * FROM billing_subscriptions
        WHERE p_after IS NULL OR id > p_after
        ORDER BY id
        LIMIT p_limit
    ) s
$$;

-- sync --verify's repair of an invoice: Stripe's invoice as observed now, the resolution
-- of its alerts and pending steps when p_settle is given, and the audit line, in one
-- transaction (sql_drift.repair_invoice); the row as it now stands.
CREATE OR REPLACE FUNCTION billing_api_repair_invoice(
    p_invoice jsonb, p_settle text, p_audit jsonb, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    repaired billing_invoices := billing_api_ops_observe_invoice(p_invoice, p_now);
BEGIN
    IF p_settle IS NOT NULL THEN
        PERFORM billing_api_ops_resolve_invoice(repaired.id, p_settle, p_audit->>'actor', p_now);
    END IF;
    PERFORM billing_api_ops_audit(p_audit, p_now);
    RETURN to_jsonb(repaired);
END
$$;

-- sync --verify's repair of a subscription (sql_drift.repair_subscription): sql_mirror's
-- UPSERT_SUBSCRIPTION as observed now by no event (shown only when its merge key,
-- domain.merge.subscription_key, is larger), and the audit line; the row as it stands.
CREATE OR REPLACE FUNCTION billing_api_repair_subscription(
    p_subscription jsonb, p_audit jsonb, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    seen billing_subscriptions := jsonb_populate_record(NULL::billing_subscriptions, p_subscription);
    stands billing_subscriptions;
BEGIN
    INSERT INTO billing_subscriptions AS cur (id, customer_id, status, currency,
        cancel_at_period_end, current_period_end, collection_paused, livemode, raw,
        stripe_created, merge_event_id, stripe_updated_at, synced_at)
    VALUES (seen.id, seen.customer_id, seen.status, seen.currency, seen.cancel_at_period_end,
        seen.current_period_end, seen.collection_paused, seen.livemode, seen.raw,
        seen.stripe_created, '', p_now, p_now)
    ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id,
        status = excluded.status, currency = excluded.currency,
        cancel_at_period_end = excluded.cancel_at_period_end,
        current_period_end = excluded.current_period_end,
        collection_paused = excluded.collection_paused, livemode = excluded.livemode,
        raw = excluded.raw, stripe_created = excluded.stripe_created,
        merge_event_id = excluded.merge_event_id,
        stripe_updated_at = excluded.stripe_updated_at, synced_at = excluded.synced_at
    -- domain.merge.subscription_key: (terminal, observed, period end, status rank, event id)
    WHERE (CASE WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN 1 ELSE 0 END,
           excluded.stripe_updated_at,
           coalesce(excluded.current_period_end, excluded.stripe_updated_at),
           CASE excluded.status WHEN 'incomplete' THEN 0 WHEN 'trialing' THEN 1
               WHEN 'paused' THEN 2 WHEN 'past_due' THEN 3 WHEN 'unpaid' THEN 4
               WHEN 'active' THEN 5 WHEN 'incomplete_expired' THEN 6 WHEN 'canceled' THEN 7 END,
           excluded.merge_event_id)
        > (CASE WHEN cur.status IN ('canceled', 'incomplete_expired') THEN 1 ELSE 0 END,
           cur.stripe_updated_at,
           coalesce(cur.current_period_end, cur.stripe_updated_at),
           CASE cur.status WHEN 'incomplete' THEN 0 WHEN 'trialing' THEN 1
               WHEN 'paused' THEN 2 WHEN 'past_due' THEN 3 WHEN 'unpaid' THEN 4
               WHEN 'active' THEN 5 WHEN 'incomplete_expired' THEN 6 WHEN 'canceled' THEN 7 END,
           cur.merge_event_id);
    PERFORM billing_api_ops_audit(p_audit, p_now);
    SELECT * INTO stands FROM billing_subscriptions WHERE id = seen.id;
    RETURN to_jsonb(stands);
END
$$;

-- retry's success: the paid invoice as observed now, its alerts resolved and pending
-- steps canceled, and the audit line told what changed, in one transaction
-- (sql_actions.settle_paid_invoice): {"resolved": [ids], "canceled": n}.
CREATE OR REPLACE FUNCTION billing_api_settle_paid_invoice(
    p_invoice jsonb, p_resolution text, p_audit jsonb, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    paid billing_invoices := billing_api_ops_observe_invoice(p_invoice, p_now);
    settled jsonb := billing_api_ops_resolve_invoice(
        paid.id, p_resolution, p_audit->>'actor', p_now);
BEGIN
    PERFORM billing_api_ops_audit(jsonb_set(p_audit, '{details}',
        coalesce(p_audit->'details', '{}'::jsonb)
        || jsonb_build_object('resolved_alerts', settled->'resolved',
                              'canceled_steps', settled->'canceled')), p_now);
    RETURN settled;
END
$$;

-- retry's decline: the alert kept open with the attempt counted (at least p_attempt_count,
-- and one more than it held: Stripe counts only the first manual attempt), its failure
-- and a note, then the audit line (sql_actions.record_failed_attempt). p_declined, when
-- given ({invoice_id, code, message, decline_code, advice_code, payment_method, known}),
-- is recorded first on the mirrored invoice as a failure observed now by no event, as
-- sql_mirror's RECORD_FAILURE records one: the first failure is the earliest, and the
-- last failure's columns are those of the largest (attempt_count, time, carries a
-- decline, event id), so the next retry knows the decline.
CREATE OR REPLACE FUNCTION billing_api_record_failed_attempt(
    p_alert_id bigint, p_attempt_count integer, p_failure text, p_note text,
    p_audit jsonb, p_now timestamptz, p_declined jsonb
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_declined IS NOT NULL THEN
        UPDATE billing_invoices SET
            first_failed_at = CASE WHEN first_failed_at IS NULL OR first_failed_at > p_now
                                   THEN p_now ELSE first_failed_at END,
            (last_failure_code, last_failure_message, last_decline_code, last_advice_code,
             last_failure_payment_method, last_failure_attempt, last_failure_at,
             last_failure_event_id) = (
                SELECT CASE WHEN later THEN p_declined ->> 'code' ELSE last_failure_code END,
                    CASE WHEN later THEN p_declined ->> 'message' ELSE last_failure_message END,
                    CASE WHEN later THEN p_declined ->> 'decline_code'
                         ELSE last_decline_code END,
                    CASE WHEN later THEN p_declined ->> 'advice_code' ELSE last_advice_code END,
                    CASE WHEN later THEN p_declined ->> 'payment_method'
                         ELSE last_failure_payment_method END,
                    CASE WHEN later THEN p_attempt_count ELSE last_failure_attempt END,
                    CASE WHEN later THEN p_now ELSE last_failure_at END,
                    CASE WHEN later THEN '' ELSE last_failure_event_id END
                FROM (SELECT last_failure_at IS NULL
                    OR (p_attempt_count, p_now,
                        CASE WHEN (p_declined ->> 'known')::boolean THEN 1 ELSE 0 END,
                        ''::text COLLATE "C")
                     > (last_failure_attempt, last_failure_at,
                        CASE WHEN last_decline_code IS NOT NULL OR last_advice_code IS NOT NULL
                             THEN 1 ELSE 0 END,
                        last_failure_event_id COLLATE "C")
                    AS later) AS failure)
        WHERE id = p_declined ->> 'invoice_id';
    END IF;
    IF p_alert_id IS NOT NULL THEN
        UPDATE billing_alerts SET
            attempt_count = CASE WHEN attempt_count + 1 > p_attempt_count
                                 THEN attempt_count + 1 ELSE p_attempt_count END,
            last_failure = p_failure, updated_at = p_now
        WHERE id = p_alert_id;
        PERFORM billing_api_ops_add_note(p_alert_id, p_audit->>'actor', p_note, p_now);
    END IF;
    PERFORM billing_api_ops_audit(p_audit, p_now);
END
$$;

-- retry that needs the customer's action (3D Secure): open, or add to, the invoice's
-- payment_action_required alert (sql_alerts' RAISE_ALERT, audited when opened), note
-- why, and the audit line with the alert's id (sql_actions.open_action_required_alert).
-- p_draft: domain.alerts.AlertDraft, whose details.opened_by is unique to this call.
CREATE OR REPLACE FUNCTION billing_api_open_action_required_alert(
    p_draft jsonb, p_note text, p_audit jsonb, p_now timestamptz
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    raised_id bigint;
    kept_details jsonb;
    actor text := p_audit->>'actor';
BEGIN
    INSERT INTO billing_alerts AS cur (type, status, dedupe_key, customer_id, invoice_id,
        amount_due, currency, stripe_event_id, attempt_count, last_failure, details,
        created_at, updated_at)
    VALUES (p_draft->>'type', 'open', p_draft->>'dedupe_key', p_draft->>'customer_id',
        p_draft->>'invoice_id', (p_draft->>'amount_due')::bigint, p_draft->>'currency',
        p_draft->>'stripe_event_id', (p_draft->>'attempt_count')::integer,
        p_draft->>'last_failure', coalesce(p_draft->'details', '{}'::jsonb), p_now, p_now)
    -- A newer failure (higher or equal attempt count) replaces what the alert says; the
    -- count never falls; details keep their first value, so opened_by tells an insert
    -- from an update.
    ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO UPDATE SET
        amount_due = CASE WHEN excluded.attempt_count >= cur.attempt_count
                          THEN excluded.amount_due ELSE cur.amount_due END,
        stripe_event_id = CASE WHEN excluded.attempt_count >= cur.attempt_count
                               THEN excluded.stripe_event_id ELSE cur.stripe_event_id END,
        last_failure = CASE WHEN excluded.attempt_count >= cur.attempt_count
                            THEN excluded.last_failure ELSE cur.last_failure END,
        attempt_count = greatest(excluded.attempt_count, cur.attempt_count),
        updated_at = excluded.updated_at
    RETURNING id, details INTO raised_id, kept_details;
    IF kept_details->'opened_by' IS NOT DISTINCT FROM p_draft->'details'->'opened_by' THEN
        PERFORM billing_api_ops_audit(jsonb_build_object(
            'actor', actor, 'action', 'alert.open', 'target', 'alert:' || raised_id,
            'outcome', 'opened',
            'details', jsonb_build_object('dedupe_key', p_draft->>'dedupe_key')), p_now);
    END IF;
    PERFORM billing_api_ops_add_note(raised_id, actor, p_note, p_now);
    PERFORM billing_api_ops_audit(jsonb_set(p_audit, '{details}',
        coalesce(p_audit->'details', '{}'::jsonb)
        || jsonb_build_object('action_alert_id', raised_id)), p_now);
    RETURN raised_id;
END
$$;

-- resend-link and portal --send: a note on the alert (when there is one) and the audit
-- line, in one transaction (sql_actions.note_alert).
CREATE OR REPLACE FUNCTION billing_api_note_alert(
    p_alert_id bigint, p_author text, p_body text, p_audit jsonb, p_now timestamptz
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_alert_id IS NOT NULL THEN
        PERFORM billing_api_ops_add_note(p_alert_id, p_author, p_body, p_now);
    END IF;
    PERFORM billing_api_ops_audit(p_audit, p_now);
END
$$;

-- Every audit line of one action on one target, oldest first, a page at a time; the page
-- key is [occurred_at, id] of the last line read.
CREATE OR REPLACE FUNCTION billing_api_action_audit(
    p_target text, p_action text, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.occurred_at, a.id), '[]'::jsonb)
    FROM (
        SELECT id, occurred_at, actor, action, target, outcome, idempotency_key, details
        FROM billing_audit_log
        WHERE target = p_target AND action = p_action
          AND (p_after IS NULL
               OR (occurred_at, id) > ((p_after->>0)::timestamptz, (p_after->>1)::bigint))
        ORDER BY occurred_at, id
        LIMIT p_limit
    ) a
$$;


-- ==== end section: quarantine, drift, actions ====

-- ==== section: alerts, dunning (adapters/store/supabase/dunning.py) ====

-- Ported from sql_alerts.py and sql_dunning.py (and postgres.py's SKIP LOCKED claim):
-- the same statements, the same ON CONFLICT conditions, the audit rows in the same
-- transaction. Alerts and steps travel as to_jsonb(row); the Python side reads the
-- columns it knows. The settled invoice statuses are domain.statuses'
-- SETTLED_INVOICE_STATUSES ('paid', 'void', 'uncollectible'); the pending step statuses
-- PENDING_STATUSES ('scheduled', 'sending', 'failed'); the completed ones
-- COMPLETED_STATUSES ('sent', 'skipped'). Listings page by key (p_after, p_limit).

-- --- alerts: reads ---------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing_api_get_alert(p_alert_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(a) FROM billing_alerts a WHERE a.id = p_alert_id
$$;

-- alerts list: newest first, paged by (created_at, id) descending. NULL filters match all;
-- p_types and p_statuses are JSON arrays of text.
CREATE OR REPLACE FUNCTION billing_api_list_alerts(
    p_types jsonb, p_statuses jsonb, p_customer_id text, p_invoice_id text,
    p_since timestamptz, p_until timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.created_at DESC, page.id DESC),
                    '[]'::jsonb)
    FROM (
        SELECT a.* FROM billing_alerts a
        WHERE (p_types IS NULL OR a.type IN (SELECT jsonb_array_elements_text(p_types)))
          AND (p_statuses IS NULL
               OR a.status IN (SELECT jsonb_array_elements_text(p_statuses)))
          AND (p_customer_id IS NULL OR a.customer_id = p_customer_id)
          AND (p_invoice_id IS NULL OR a.invoice_id = p_invoice_id)
          AND (p_since IS NULL OR a.created_at >= p_since)
          AND (p_until IS NULL OR a.created_at < p_until)
          AND (p_after IS NULL OR (a.created_at, a.id)
               < ((p_after ->> 'created_at')::timestamptz, (p_after ->> 'id')::bigint))
        ORDER BY a.created_at DESC, a.id DESC
        LIMIT p_limit
    ) page
$$;

-- How many alerts billing_api_list_alerts would list with no limit: `showing N of M`.
CREATE OR REPLACE FUNCTION billing_api_count_alerts(
    p_types jsonb, p_statuses jsonb, p_customer_id text, p_invoice_id text,
    p_since timestamptz, p_until timestamptz
) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_alerts a
    WHERE (p_types IS NULL OR a.type IN (SELECT jsonb_array_elements_text(p_types)))
      AND (p_statuses IS NULL OR a.status IN (SELECT jsonb_array_elements_text(p_statuses)))
      AND (p_customer_id IS NULL OR a.customer_id = p_customer_id)
      AND (p_invoice_id IS NULL OR a.invoice_id = p_invoice_id)
      AND (p_since IS NULL OR a.created_at >= p_since)
      AND (p_until IS NULL OR a.created_at < p_until)
$$;

-- An incident summary's alerts: opened or resolved in [since, until), and every unresolved
-- one; oldest first, paged by (created_at, id).
CREATE OR REPLACE FUNCTION billing_api_alerts_touched(
    p_since timestamptz, p_until timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.created_at, page.id), '[]'::jsonb)
    FROM (
        SELECT a.* FROM billing_alerts a
        WHERE ((a.created_at >= p_since AND a.created_at < p_until)
               OR (a.resolved_at >= p_since AND a.resolved_at < p_until)
               OR a.status IN ('open', 'acknowledged'))
          AND (p_after IS NULL OR (a.created_at, a.id)
               > ((p_after ->> 'created_at')::timestamptz, (p_after ->> 'id')::bigint))
        ORDER BY a.created_at, a.id
        LIMIT p_limit
    ) page
$$;

-- The notes of several alerts (p_alert_ids: a JSON array of ids), oldest first, paged by
-- (created_at, id).
CREATE OR REPLACE FUNCTION billing_api_alert_notes(
    p_alert_ids jsonb, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.created_at, page.id), '[]'::jsonb)
    FROM (
        SELECT n.id, n.alert_id, n.author, n.body, n.created_at FROM billing_alert_notes n
        WHERE n.alert_id IN (SELECT (jsonb_array_elements_text(p_alert_ids))::bigint)
          AND (p_after IS NULL OR (n.created_at, n.id)
               > ((p_after ->> 'created_at')::timestamptz, (p_after ->> 'id')::bigint))
        ORDER BY n.created_at, n.id
        LIMIT p_limit
    ) page
$$;

-- --- alerts: transitions, each with its audit row --------------------------------

-- Open an alert, or update the unresolved one with the same dedupe_key (RAISE_ALERT of
-- sql_alerts.py): a newer failure (higher or equal attempt count) replaces what the alert
-- says; an older one only raises the count. details keeps its first value, so its
-- opened_by tells an insert from an update. Returns {"alert": …, "opened": bool}.
CREATE OR REPLACE FUNCTION billing_api_raise_alert(
    p_draft jsonb, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    raised billing_alerts;
    opened boolean;
BEGIN
    INSERT INTO billing_alerts AS b (type, status, dedupe_key, customer_id, invoice_id,
        amount_due, currency, stripe_event_id, attempt_count, last_failure, details,
        created_at, updated_at)
    VALUES (p_draft ->> 'type', 'open', p_draft ->> 'dedupe_key', p_draft ->> 'customer_id',
        p_draft ->> 'invoice_id', (p_draft ->> 'amount_due')::bigint, p_draft ->> 'currency',
        p_draft ->> 'stripe_event_id', coalesce((p_draft ->> 'attempt_count')::integer, 0),
        p_draft ->> 'last_failure', coalesce(p_draft -> 'details', '{}'::jsonb), p_now, p_now)
    ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO UPDATE SET
        amount_due = CASE WHEN excluded.attempt_count >= b.attempt_count
                          THEN excluded.amount_due ELSE b.amount_due END,
        stripe_event_id = CASE WHEN excluded.attempt_count >= b.attempt_count
                               THEN excluded.stripe_event_id ELSE b.stripe_event_id END,
        last_failure = CASE WHEN excluded.attempt_count >= b.attempt_count
                            THEN excluded.last_failure ELSE b.last_failure END,
        attempt_count = CASE WHEN excluded.attempt_count > b.attempt_count
                             THEN excluded.attempt_count ELSE b.attempt_count END,
        updated_at = excluded.updated_at
    RETURNING * INTO raised;
    opened := (raised.details -> 'opened_by') IS NOT DISTINCT FROM
              (p_draft -> 'details' -> 'opened_by');
    IF opened THEN
        INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
        VALUES (p_now, p_actor, 'alert.open', 'alert:' || raised.id, 'opened',
                jsonb_build_object('dedupe_key', raised.dedupe_key));
    END IF;
    RETURN jsonb_build_object('alert', to_jsonb(raised), 'opened', opened);
END
$$;

-- Open -> acknowledged (audited); the alert as it is now, NULL when there is none.
CREATE OR REPLACE FUNCTION billing_api_acknowledge_alert(
    p_alert_id bigint, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE billing_alerts SET status = 'acknowledged', acknowledged_at = p_now,
        updated_at = p_now
    WHERE id = p_alert_id AND status = 'open';
    IF FOUND THEN
        INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome)
        VALUES (p_now, p_actor, 'alert.ack', 'alert:' || p_alert_id, 'acknowledged');
    END IF;
    RETURN (SELECT to_jsonb(a) FROM billing_alerts a WHERE a.id = p_alert_id);
END
$$;

-- Resolve an unresolved alert (audited); the alert as it is now, NULL when there is none.
CREATE OR REPLACE FUNCTION billing_api_resolve_alert(
    p_alert_id bigint, p_resolution text, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE billing_alerts SET status = 'resolved', resolved_at = p_now,
        resolution = p_resolution, updated_at = p_now
    WHERE id = p_alert_id AND status <> 'resolved';
    IF FOUND THEN
        INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
        VALUES (p_now, p_actor, 'alert.resolve', 'alert:' || p_alert_id, 'resolved',
                jsonb_build_object('resolution', p_resolution));
    END IF;
    RETURN (SELECT to_jsonb(a) FROM billing_alerts a WHERE a.id = p_alert_id);
END
$$;

-- Append a note (audited); the note, NULL when no alert has this id.
CREATE OR REPLACE FUNCTION billing_api_add_alert_note(
    p_alert_id bigint, p_author text, p_body text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    note billing_alert_notes;
BEGIN
    UPDATE billing_alerts SET updated_at = p_now WHERE id = p_alert_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO billing_alert_notes (alert_id, author, body, created_at)
    VALUES (p_alert_id, p_author, p_body, p_now) RETURNING * INTO note;
    INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome)
    VALUES (p_now, p_author, 'alert.note', 'alert:' || p_alert_id, 'noted');
    RETURN to_jsonb(note);
END
$$;

-- Resolve every unresolved alert of the invoice and cancel its pending steps, in one
-- transaction: {"resolved": [ids in order], "canceled": n}.
CREATE OR REPLACE FUNCTION billing_api_resolve_invoice_alerts(
    p_invoice_id text, p_resolution text, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    resolved bigint[];
    canceled integer;
BEGIN
    WITH settled AS (
        UPDATE billing_alerts SET status = 'resolved', resolved_at = p_now,
            resolution = p_resolution, updated_at = p_now
        WHERE invoice_id = p_invoice_id AND status <> 'resolved' RETURNING id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO resolved FROM settled;
    UPDATE billing_dunning_events SET status = 'canceled', reason = p_resolution,
        lease_expires_at = NULL, updated_at = p_now
    WHERE invoice_id = p_invoice_id AND status IN ('scheduled', 'sending', 'failed');
    GET DIAGNOSTICS canceled = ROW_COUNT;
    INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
    SELECT p_now, p_actor, 'alert.resolve', 'alert:' || id, 'resolved',
           jsonb_build_object('resolution', p_resolution)
    FROM unnest(resolved) WITH ORDINALITY AS r(id, n) ORDER BY n;
    RETURN jsonb_build_object('resolved', to_jsonb(resolved), 'canceled', canceled);
END
$$;

-- --- alerts: ledger thresholds -------------------------------------------------------

-- Ledger sums per customer and currency for one kind in [since, until), paged by
-- (customer_id, currency); exact (numeric) sums, never across currencies.
CREATE OR REPLACE FUNCTION billing_api_ledger_totals(
    p_kind text, p_since timestamptz, p_until timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.customer_id, page.currency),
                    '[]'::jsonb)
    FROM (
        SELECT l.customer_id, l.currency, sum(l.amount) AS amount, count(*) AS entries
        FROM billing_usage_ledger l
        WHERE l.kind = p_kind AND l.occurred_at >= p_since AND l.occurred_at < p_until
          AND (p_after IS NULL OR (l.customer_id, l.currency)
               > (p_after ->> 'customer_id', p_after ->> 'currency'))
        GROUP BY l.customer_id, l.currency
        ORDER BY l.customer_id, l.currency
        LIMIT p_limit
    ) page
$$;

-- The occurred_at range of the entries recorded at p_created_at (one import), or NULL.
CREATE OR REPLACE FUNCTION billing_api_ledger_created_window(p_created_at timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT CASE WHEN min(occurred_at) IS NULL THEN NULL
                ELSE jsonb_build_object('start', min(occurred_at), 'end', max(occurred_at)) END
    FROM billing_usage_ledger WHERE created_at = p_created_at
$$;

-- --- dunning: what a message needs ---------------------------------------------------

-- FACT_COLUMNS of sql_dunning.py for one invoice and customer: the invoice (NULLs when it
-- is not mirrored, "mirrored": false), the contact Stripe copied onto it, and the mirrored
-- customer's ("customer": null when not mirrored). The Python side picks the freshest.
CREATE OR REPLACE FUNCTION billing_api_dunning_facts(p_invoice_id text, p_customer_id text)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object(
        'mirrored', i.id IS NOT NULL, 'invoice_customer_id', i.customer_id,
        'status', i.status, 'number', i.number, 'amount_due', i.amount_due,
        'amount_remaining', i.amount_remaining, 'currency', i.currency,
        'hosted_invoice_url', i.hosted_invoice_url, 'first_failed_at', i.first_failed_at,
        'customer_email', i.customer_email, 'customer_phone', i.customer_phone,
        'customer_name', i.customer_name, 'finalized_at', i.finalized_at,
        'next_payment_attempt', i.next_payment_attempt,
        'last_decline_code', i.last_decline_code, 'last_advice_code', i.last_advice_code,
        'customer', CASE WHEN c.id IS NULL THEN NULL ELSE jsonb_build_object(
            'email', c.email, 'phone', c.phone, 'name', c.name, 'deleted', c.deleted,
            'observed_at', c.stripe_updated_at) END)
    FROM (SELECT 1) AS one
    LEFT JOIN billing_invoices i ON i.id = p_invoice_id
    LEFT JOIN billing_customers c
        ON c.id = coalesce(p_customer_id, (SELECT customer_id FROM billing_invoices
                                           WHERE id = p_invoice_id))
$$;

-- A step as a run sees it: the row, its facts, and its invoice's timeline (_timelines of
-- sql_dunning.py): "latest_due", the last day whose step is due at p_now or already out
-- (a catching-up run sends only that one), and "channels", those its steps use; and its
-- customer's "exemption" from dunning (NULL when not exempt), read in the same
-- transaction as the claim.
CREATE OR REPLACE FUNCTION billing_api_dunning_claimed_json(
    p_step billing_dunning_events, p_now timestamptz
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(p_step) || jsonb_build_object(
        'facts', billing_api_dunning_facts(p_step.invoice_id, p_step.customer_id),
        'latest_due', (SELECT max(o.day) FROM billing_dunning_events o
                       WHERE o.invoice_id = p_step.invoice_id
                         AND o.status IN ('scheduled', 'sending', 'sent')
                         AND o.due_at <= p_now),
        'channels', (SELECT jsonb_agg(DISTINCT o.channel) FROM billing_dunning_events o
                     WHERE o.invoice_id = p_step.invoice_id),
        'exemption', (SELECT to_jsonb(x) FROM billing_dunning_exemptions x
                      WHERE x.customer_id = p_step.customer_id))
$$;

CREATE OR REPLACE FUNCTION billing_api_invoice_facts(p_invoice_id text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT billing_api_dunning_facts(i.id, i.customer_id)
    FROM billing_invoices i WHERE i.id = p_invoice_id
$$;

-- Unsettled mirrored invoices that have steps (all, or those of p_invoice_ids, a JSON
-- array), each with its facts, the channels its steps use and those its scheduled steps
-- use; paged by invoice id.
CREATE OR REPLACE FUNCTION billing_api_dunning_reach(
    p_invoice_ids jsonb, p_after text, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'invoice_id', page.id, 'customer_id', page.customer_id,
        'facts', billing_api_dunning_facts(page.id, page.customer_id),
        'channels', page.channels, 'scheduled', page.scheduled) ORDER BY page.id), '[]'::jsonb)
    FROM (
        SELECT i.id, i.customer_id, uses.channels, uses.scheduled
        FROM billing_invoices i
        CROSS JOIN LATERAL (
            SELECT jsonb_agg(DISTINCT d.channel) AS channels,
                   coalesce(jsonb_agg(DISTINCT d.channel) FILTER (WHERE d.status = 'scheduled'),
                            '[]'::jsonb) AS scheduled
            FROM billing_dunning_events d WHERE d.invoice_id = i.id
        ) uses
        WHERE uses.channels IS NOT NULL
          AND i.status NOT IN ('paid', 'void', 'uncollectible')
          AND (p_invoice_ids IS NULL
               OR i.id IN (SELECT jsonb_array_elements_text(p_invoice_ids)))
          AND (p_after IS NULL OR i.id > p_after)
        ORDER BY i.id
        LIMIT p_limit
    ) page
$$;

-- --- dunning: scheduling -------------------------------------------------------------

-- Insert steps (a JSON array of StepDrafts), one per invoice, day and channel, so planning
-- twice is a no-op; how many were new. One statement: a bad step writes none.
CREATE OR REPLACE FUNCTION billing_api_schedule_steps(p_steps jsonb, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    inserted integer;
BEGIN
    INSERT INTO billing_dunning_events (invoice_id, customer_id, alert_id, day, channel,
        template, status, due_at, created_at, updated_at)
    SELECT s.step ->> 'invoice_id', s.step ->> 'customer_id', (s.step ->> 'alert_id')::bigint,
           (s.step ->> 'day')::integer, s.step ->> 'channel', s.step ->> 'template',
           'scheduled', (s.step ->> 'due_at')::timestamptz, p_now, p_now
    FROM jsonb_array_elements(p_steps) WITH ORDINALITY AS s(step, n)
    ORDER BY s.n
    ON CONFLICT (invoice_id, day, channel) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END
$$;

-- Cancel every step of the invoice not yet sent (PENDING_STATUSES); how many.
CREATE OR REPLACE FUNCTION billing_api_cancel_pending_steps(
    p_invoice_id text, p_reason text, p_now timestamptz
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    canceled integer;
BEGIN
    UPDATE billing_dunning_events SET status = 'canceled', reason = p_reason,
        lease_expires_at = NULL, updated_at = p_now
    WHERE invoice_id = p_invoice_id AND status IN ('scheduled', 'sending', 'failed');
    GET DIAGNOSTICS canceled = ROW_COUNT;
    RETURN canceled;
END
$$;

-- --- dunning: a run ------------------------------------------------------------------

-- Steps left in sending past their lease go to needs_review, saying whether the run had
-- confirmed them (REVIEW_CONFIRMED / REVIEW_UNCONFIRMED of sql_dunning.py, passed in so the
-- wording has one home); how many this call moved.
CREATE OR REPLACE FUNCTION billing_api_expire_leases(
    p_now timestamptz, p_unconfirmed text, p_confirmed text
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    expired integer;
BEGIN
    UPDATE billing_dunning_events SET status = 'needs_review',
        reason = CASE WHEN confirmed_at IS NULL THEN p_unconfirmed ELSE p_confirmed END,
        updated_at = p_now
    WHERE status = 'sending' AND lease_expires_at < p_now;
    GET DIAGNOSTICS expired = ROW_COUNT;
    RETURN expired;
END
$$;

CREATE OR REPLACE FUNCTION billing_api_count_needs_review() RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_dunning_events WHERE status = 'needs_review'
$$;

CREATE OR REPLACE FUNCTION billing_api_count_due_steps(p_now timestamptz) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_dunning_events WHERE status = 'scheduled' AND due_at <= p_now
$$;

-- The steps a run would claim now, claiming nothing (--dry-run): by (due_at, id), paged by
-- that key.
CREATE OR REPLACE FUNCTION billing_api_due_steps(
    p_now timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(billing_api_dunning_claimed_json(page, p_now)
                              ORDER BY page.due_at, page.id), '[]'::jsonb)
    FROM (
        SELECT d.* FROM billing_dunning_events d
        WHERE d.status = 'scheduled' AND d.due_at <= p_now
          AND (p_after IS NULL OR (d.due_at, d.id)
               > ((p_after ->> 'due_at')::timestamptz, (p_after ->> 'id')::bigint))
        ORDER BY d.due_at, d.id
        LIMIT p_limit
    ) page
$$;

-- Claim up to p_limit due steps for p_run_id under a lease, atomically: rows another claim
-- holds are skipped, not waited for (FOR UPDATE SKIP LOCKED, as postgres.py does), so
-- concurrent runs share the work and never receive the same step; the status condition
-- keeps the claim exclusive even so. Returns the claimed steps as a run sees them, by
-- (due_at, id), read in the claim's transaction.
CREATE OR REPLACE FUNCTION billing_api_claim_due_steps(
    p_now timestamptz, p_lease_until timestamptz, p_run_id text, p_limit integer
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    claimed bigint[];
BEGIN
    WITH picked AS (
        SELECT id FROM billing_dunning_events
        WHERE status = 'scheduled' AND due_at <= p_now
        ORDER BY due_at, id LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE billing_dunning_events d SET status = 'sending', claimed_at = p_now,
            lease_expires_at = p_lease_until, claimed_by = p_run_id, confirmed_at = NULL,
            updated_at = p_now
        FROM picked WHERE d.id = picked.id AND d.status = 'scheduled'
        RETURNING d.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO claimed FROM moved;
    RETURN (
        SELECT coalesce(jsonb_agg(billing_api_dunning_claimed_json(d, p_now)
                                  ORDER BY d.due_at, d.id), '[]'::jsonb)
        FROM billing_dunning_events d WHERE d.id = ANY (claimed)
    );
END
$$;

-- Count an attempt for each step (p_step_ids, a JSON array) the run still holds whose
-- invoice is unsettled and whose customer is not exempt, noting it confirmed and renewing
-- its lease; those ids. An exemption committed since the claim stops the message here, as
-- a payment does.
CREATE OR REPLACE FUNCTION billing_api_confirm_sends(
    p_step_ids jsonb, p_run_id text, p_now timestamptz, p_lease_until timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    confirmed jsonb;
BEGIN
    WITH held AS (
        UPDATE billing_dunning_events d SET attempts = attempts + 1, confirmed_at = p_now,
            updated_at = p_now, lease_expires_at = coalesce(p_lease_until, lease_expires_at)
        WHERE d.id IN (SELECT (jsonb_array_elements_text(p_step_ids))::bigint)
          AND d.claimed_by = p_run_id AND d.status = 'sending'
          AND NOT EXISTS (SELECT 1 FROM billing_invoices i WHERE i.id = d.invoice_id
                          AND i.status IN ('paid', 'void', 'uncollectible'))
          AND NOT EXISTS (SELECT 1 FROM billing_dunning_exemptions x
                          WHERE x.customer_id = d.customer_id)
        RETURNING d.id
    )
    SELECT coalesce(jsonb_agg(id ORDER BY id), '[]'::jsonb) INTO confirmed FROM held;
    RETURN confirmed;
END
$$;

-- Record outcomes (a JSON array of StepOutcomes) of steps the run holds, in one
-- transaction; how many were recorded. A sent outcome is recorded even if the step was
-- canceled or expired meanwhile: it went out. An undeliverable skip opens its unpaid
-- invoice's dunning_undeliverable alert (one unresolved per invoice), audited as p_actor.
CREATE OR REPLACE FUNCTION billing_api_record_step_outcomes(
    p_outcomes jsonb, p_run_id text, p_now timestamptz, p_actor text
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    recorded integer := 0;
    n integer;
    outcome record;
    alert_id bigint;
    details jsonb;
BEGIN
    UPDATE billing_dunning_events d SET status = 'sent', sent_at = p_now,
        provider_message_id = o.provider_message_id, last_error = NULL,
        lease_expires_at = NULL, updated_at = p_now
    FROM jsonb_to_recordset(p_outcomes) AS o(step_id bigint, status text,
                                              provider_message_id text)
    WHERE o.status = 'sent' AND d.id = o.step_id AND d.claimed_by = p_run_id
      AND d.status IN ('sending', 'canceled', 'needs_review');
    GET DIAGNOSTICS n = ROW_COUNT;
    recorded := recorded + n;
    UPDATE billing_dunning_events d SET status = 'failed', last_error = o.error,
        lease_expires_at = NULL, updated_at = p_now
    FROM jsonb_to_recordset(p_outcomes) AS o(step_id bigint, status text, error text)
    WHERE o.status = 'failed' AND d.id = o.step_id AND d.claimed_by = p_run_id
      AND d.status = 'sending';
    GET DIAGNOSTICS n = ROW_COUNT;
    recorded := recorded + n;
    UPDATE billing_dunning_events d SET status = o.status, reason = o.reason,
        lease_expires_at = NULL, updated_at = p_now
    FROM jsonb_to_recordset(p_outcomes) AS o(step_id bigint, status text, reason text)
    WHERE o.status IN ('skipped', 'canceled') AND d.id = o.step_id
      AND d.claimed_by = p_run_id AND d.status = 'sending';
    GET DIAGNOSTICS n = ROW_COUNT;
    recorded := recorded + n;
    FOR outcome IN
        SELECT (o.item ->> 'step_id')::bigint AS step_id, o.item ->> 'reason' AS reason
        FROM jsonb_array_elements(p_outcomes) WITH ORDINALITY AS o(item, n)
        WHERE o.item ->> 'status' = 'skipped'
          AND coalesce((o.item ->> 'undeliverable')::boolean, false)
        ORDER BY o.n
    LOOP
        details := jsonb_build_object('step_id', outcome.step_id, 'run_id', p_run_id);
        alert_id := NULL;
        INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id,
            amount_due, currency, last_failure, details, created_at, updated_at)
        SELECT 'dunning_undeliverable', 'open', 'dunning_undeliverable:' || d.invoice_id,
            d.customer_id, d.invoice_id,
            CASE WHEN i.amount_remaining <> 0 THEN i.amount_remaining ELSE i.amount_due END,
            i.currency, outcome.reason, details, p_now, p_now
        FROM billing_dunning_events d LEFT JOIN billing_invoices i ON i.id = d.invoice_id
        WHERE d.id = outcome.step_id AND d.claimed_by = p_run_id AND d.status = 'skipped'
          AND (i.status IS NULL OR i.status NOT IN ('paid', 'void', 'uncollectible'))
        ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING
        RETURNING id INTO alert_id;
        IF alert_id IS NOT NULL THEN
            INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome,
                details)
            VALUES (p_now, p_actor, 'alert.open', 'alert:' || alert_id, 'opened', details);
        END IF;
    END LOOP;
    RETURN recorded;
END
$$;

-- Give claimed, unsent steps (a JSON array of ids) back; how many.
CREATE OR REPLACE FUNCTION billing_api_release_claims(
    p_step_ids jsonb, p_run_id text, p_now timestamptz
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    released integer;
BEGIN
    UPDATE billing_dunning_events SET status = 'scheduled', claimed_at = NULL,
        lease_expires_at = NULL, claimed_by = NULL, confirmed_at = NULL, updated_at = p_now
    WHERE id IN (SELECT (jsonb_array_elements_text(p_step_ids))::bigint)
      AND claimed_by = p_run_id AND status = 'sending';
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END
$$;

-- --- dunning: operators --------------------------------------------------------------

-- dunning list: steps by (due_at, id), paged by that key; NULL filters match all.
CREATE OR REPLACE FUNCTION billing_api_list_steps(
    p_statuses jsonb, p_invoice_id text, p_alert_id bigint, p_customer_id text,
    p_since timestamptz, p_until timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.due_at, page.id), '[]'::jsonb)
    FROM (
        SELECT d.* FROM billing_dunning_events d
        WHERE (p_statuses IS NULL
               OR d.status IN (SELECT jsonb_array_elements_text(p_statuses)))
          AND (p_invoice_id IS NULL OR d.invoice_id = p_invoice_id)
          AND (p_alert_id IS NULL OR d.alert_id = p_alert_id)
          AND (p_customer_id IS NULL OR d.customer_id = p_customer_id)
          AND (p_since IS NULL OR d.due_at >= p_since)
          AND (p_until IS NULL OR d.due_at < p_until)
          AND (p_after IS NULL OR (d.due_at, d.id)
               > ((p_after ->> 'due_at')::timestamptz, (p_after ->> 'id')::bigint))
        ORDER BY d.due_at, d.id
        LIMIT p_limit
    ) page
$$;

CREATE OR REPLACE FUNCTION billing_api_count_steps(
    p_statuses jsonb, p_invoice_id text, p_customer_id text,
    p_since timestamptz, p_until timestamptz
) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_dunning_events d
    WHERE (p_statuses IS NULL OR d.status IN (SELECT jsonb_array_elements_text(p_statuses)))
      AND (p_invoice_id IS NULL OR d.invoice_id = p_invoice_id)
      AND (p_customer_id IS NULL OR d.customer_id = p_customer_id)
      AND (p_since IS NULL OR d.due_at >= p_since)
      AND (p_until IS NULL OR d.due_at < p_until)
$$;

CREATE OR REPLACE FUNCTION billing_api_get_step(p_step_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(d) FROM billing_dunning_events d WHERE d.id = p_step_id
$$;

-- Mark a step sent by hand if it is in one of p_from_statuses; the step, else NULL.
CREATE OR REPLACE FUNCTION billing_api_mark_step_sent(
    p_step_id bigint, p_from_statuses jsonb, p_reason text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    marked billing_dunning_events;
BEGIN
    UPDATE billing_dunning_events SET status = 'sent', sent_at = p_now, reason = p_reason,
        claimed_by = NULL, lease_expires_at = NULL, updated_at = p_now
    WHERE id = p_step_id AND status IN (SELECT jsonb_array_elements_text(p_from_statuses))
    RETURNING * INTO marked;
    RETURN CASE WHEN marked.id IS NULL THEN NULL ELSE to_jsonb(marked) END;
END
$$;

-- Schedule a step again if it is in one of p_from_statuses; the step, else NULL.
CREATE OR REPLACE FUNCTION billing_api_requeue_step(
    p_step_id bigint, p_from_statuses jsonb, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    requeued billing_dunning_events;
BEGIN
    UPDATE billing_dunning_events SET status = 'scheduled', reason = NULL, claimed_at = NULL,
        claimed_by = NULL, lease_expires_at = NULL, confirmed_at = NULL, updated_at = p_now
    WHERE id = p_step_id AND status IN (SELECT jsonb_array_elements_text(p_from_statuses))
    RETURNING * INTO requeued;
    RETURN CASE WHEN requeued.id IS NULL THEN NULL ELSE to_jsonb(requeued) END;
END
$$;

-- Undo a manual mark-sent while the step is still sent with the mark's reason.
CREATE OR REPLACE FUNCTION billing_api_unmark_step_sent(
    p_step_id bigint, p_marked_reason text, p_status text, p_reason text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    restored billing_dunning_events;
BEGIN
    UPDATE billing_dunning_events SET status = p_status, sent_at = NULL, reason = p_reason,
        updated_at = p_now
    WHERE id = p_step_id AND status = 'sent' AND reason = p_marked_reason
    RETURNING * INTO restored;
    RETURN CASE WHEN restored.id IS NULL THEN NULL ELSE to_jsonb(restored) END;
END
$$;

-- --- dunning: escalation -------------------------------------------------------------

-- Unsettled invoices with p_threshold or more sent/skipped steps and no dunning_exhausted
-- alert yet (in any status), of customers not exempt now; paged by invoice id.
CREATE OR REPLACE FUNCTION billing_api_escalation_candidates(
    p_threshold integer, p_after text, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.invoice_id), '[]'::jsonb)
    FROM (
        SELECT done.invoice_id, done.customer_id, done.completed,
               i.amount_remaining AS amount_due, i.currency, done.alert_id
        FROM (
            SELECT d.invoice_id, min(d.customer_id) AS customer_id, count(*) AS completed,
                   max(d.alert_id) AS alert_id
            FROM billing_dunning_events d
            WHERE d.status IN ('sent', 'skipped') AND (p_after IS NULL OR d.invoice_id > p_after)
            GROUP BY d.invoice_id HAVING count(*) >= p_threshold
        ) done
        LEFT JOIN billing_invoices i ON i.id = done.invoice_id
        WHERE (i.status IS NULL OR i.status NOT IN ('paid', 'void', 'uncollectible'))
          AND NOT EXISTS (SELECT 1 FROM billing_alerts a WHERE a.type = 'dunning_exhausted'
                          AND a.invoice_id = done.invoice_id)
          -- Whoever exempted the customer owns the follow-up while the exemption lasts.
          AND NOT EXISTS (SELECT 1 FROM billing_dunning_exemptions x
                          WHERE x.customer_id = done.customer_id)
        ORDER BY done.invoice_id
        LIMIT p_limit
    ) page
$$;

-- Open the invoice's dunning_exhausted alert; its id, NULL if one already exists. Once per
-- invoice, ever: the NOT EXISTS covers resolved alerts, and the partial unique index
-- settles two runs racing to open it.
CREATE OR REPLACE FUNCTION billing_api_open_exhaustion_alert(
    p_candidate jsonb, p_details jsonb, p_now timestamptz
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    opened bigint;
    invoice text := p_candidate ->> 'invoice_id';
BEGIN
    INSERT INTO billing_alerts (type, status, dedupe_key, customer_id, invoice_id,
        amount_due, currency, details, created_at, updated_at)
    SELECT 'dunning_exhausted', 'open', 'dunning_exhausted:' || invoice,
        p_candidate ->> 'customer_id', invoice, (p_candidate ->> 'amount_due')::bigint,
        p_candidate ->> 'currency', coalesce(p_details, '{}'::jsonb), p_now, p_now
    WHERE NOT EXISTS (SELECT 1 FROM billing_alerts a
                      WHERE a.type = 'dunning_exhausted' AND a.invoice_id = invoice)
    ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING
    RETURNING id INTO opened;
    RETURN opened;
END
$$;

-- Replace an escalation alert's details (who was notified, and how it went).
CREATE OR REPLACE FUNCTION billing_api_update_alert_details(
    p_alert_id bigint, p_details jsonb, p_now timestamptz
) RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    UPDATE billing_alerts SET details = coalesce(p_details, '{}'::jsonb), updated_at = p_now
    WHERE id = p_alert_id AND type = 'dunning_exhausted'
$$;



-- ==== end section: alerts, dunning ====

-- ==== section: ledger, finance, audit (adapters/store/supabase/finance.py) ====

-- --- ledger imports larger than one request ------------------------------------------
-- A REST request is one transaction, and a million-row import cannot be one request. So
-- an import's rows are staged here under the import's id, a few thousand per request, and
-- billing_api_ledger_import_commit moves them into the ledger in ONE transaction that
-- judges every external_id first: the ledger sees the whole import or nothing of it.
--
-- billing_ledger_imports: one row per import. status 'staging' while rows arrive; then
-- the commit's verdict ('committed', 'refused' for external_id conflicts, 'dry_run'), with
-- its result, so that a commit repeated after a lost answer returns the same result and
-- records nothing twice. touched_at is the database's clock (not the CLI's injected one):
-- a staging untouched for an hour is abandoned (the process died) and is deleted by the
-- next import, with its rows; finished imports are kept a week for repeats.
-- Neither table is one of the store's TABLES (db status counts the ledger itself; staged
-- rows are not entries until committed).
CREATE TABLE IF NOT EXISTS billing_ledger_imports (
    import_id   uuid PRIMARY KEY,
    status      text NOT NULL DEFAULT 'staging'
                CHECK (status IN ('staging', 'committed', 'refused', 'dry_run')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    touched_at  timestamptz NOT NULL DEFAULT now(),
    result      jsonb,
    CHECK ((status = 'staging') = (result IS NULL))
);

-- The staged rows, numbered 1, 2, … in import order (seq: the row's place in the import,
-- which conflicts are reported by). Typed like the ledger, so a bad value fails its stage
-- request, not the commit.
CREATE TABLE IF NOT EXISTS billing_ledger_import_rows (
    import_id    uuid NOT NULL REFERENCES billing_ledger_imports (import_id) ON DELETE CASCADE,
    seq          bigint NOT NULL CHECK (seq > 0),
    customer_id  text NOT NULL,
    kind         text NOT NULL,
    amount       bigint NOT NULL,
    currency     text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    invoice_id   text,
    description  text,
    external_id  text,
    PRIMARY KEY (import_id, seq)
);
CREATE INDEX IF NOT EXISTS billing_ledger_import_rows_external_idx
    ON billing_ledger_import_rows (import_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS billing_ledger_imports_touched_idx
    ON billing_ledger_imports (touched_at);

-- Row-level security with no policies, like every billing table (see version 1).
ALTER TABLE billing_ledger_imports ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_ledger_import_rows ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format(
                'REVOKE ALL ON billing_ledger_imports, billing_ledger_import_rows FROM %I',
                api_role);
        END IF;
    END LOOP;
END
$$;

-- --- ledger ----------------------------------------------------------------------------

-- One entry (LedgerSql.record_ledger_entry): {"created": true, "entry": …} when new; with
-- a known external_id, the recorded entry and created false, writing nothing (the caller
-- compares the facts and refuses a reuse with other facts).
CREATE OR REPLACE FUNCTION billing_api_record_ledger_entry(p_entry jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    found_entry jsonb;
BEGIN
    INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, occurred_at,
        invoice_id, description, external_id, created_at)
    SELECT d.customer_id, d.kind, d.amount, d.currency, d.occurred_at, d.invoice_id,
        d.description, d.external_id, p_now
    FROM jsonb_populate_record(NULL::billing_usage_ledger, p_entry) AS d
    ON CONFLICT (external_id) DO NOTHING
    RETURNING to_jsonb(billing_usage_ledger.*) INTO found_entry;
    IF found_entry IS NOT NULL THEN
        RETURN jsonb_build_object('created', true, 'entry', found_entry);
    END IF;
    -- A new statement, so a new snapshot: it sees the entry ON CONFLICT waited for.
    SELECT to_jsonb(l.*) INTO found_entry
    FROM billing_usage_ledger l WHERE l.external_id = p_entry->>'external_id';
    RETURN jsonb_build_object('created', false, 'entry', found_entry);
END
$$;

-- ledger list: newest first, a page after the key (occurred_at, id) of the last row seen.
CREATE OR REPLACE FUNCTION billing_api_list_ledger(
    p_customer_id text, p_kind text, p_since timestamptz, p_until timestamptz,
    p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page.*) ORDER BY page.occurred_at DESC,
        page.id DESC), '[]'::jsonb)
    FROM (
        SELECT * FROM billing_usage_ledger l
        WHERE (p_customer_id IS NULL OR l.customer_id = p_customer_id)
          AND (p_kind IS NULL OR l.kind = p_kind)
          AND (p_since IS NULL OR l.occurred_at >= p_since)
          AND (p_until IS NULL OR l.occurred_at < p_until)
          AND (p_after IS NULL OR (l.occurred_at, l.id)
               < ((p_after->>'occurred_at')::timestamptz, (p_after->>'id')::bigint))
        ORDER BY l.occurred_at DESC, l.id DESC
        LIMIT p_limit
    ) AS page
$$;

CREATE OR REPLACE FUNCTION billing_api_count_ledger(
    p_customer_id text, p_kind text, p_since timestamptz, p_until timestamptz
) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_usage_ledger l
    WHERE (p_customer_id IS NULL OR l.customer_id = p_customer_id)
      AND (p_kind IS NULL OR l.kind = p_kind)
      AND (p_since IS NULL OR l.occurred_at >= p_since)
      AND (p_until IS NULL OR l.occurred_at < p_until)
$$;

-- Stage rows p_first_seq, p_first_seq + 1, … of an import: p_rows is a JSON array of
-- [customer_id, kind, amount, currency, occurred_at, invoice_id, description, external_id]
-- arrays. The first stage (p_first_seq 1) opens the import and deletes abandoned ones.
-- Repeating a stage (its answer was lost) stages nothing twice: rows are keyed by
-- (import_id, seq). A stage arriving after its import was committed changes nothing.
CREATE OR REPLACE FUNCTION billing_api_ledger_import_stage(
    p_import_id uuid, p_first_seq bigint, p_rows jsonb
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
-- Past the role's 8 s: the first stage may delete a large abandoned staging.
SET search_path = public, pg_temp SET statement_timeout = '2min' AS $$
DECLARE
    current_status text;
    staged bigint;
BEGIN
    IF p_first_seq = 1 THEN
        DELETE FROM billing_ledger_imports
        WHERE (status = 'staging' AND touched_at < now() - interval '1 hour')
           OR (status <> 'staging' AND touched_at < now() - interval '7 days');
        INSERT INTO billing_ledger_imports (import_id) VALUES (p_import_id)
        ON CONFLICT (import_id) DO NOTHING;
    END IF;
    -- Locks the import against a commit running at the same time.
    UPDATE billing_ledger_imports SET touched_at = now()
    WHERE import_id = p_import_id AND status = 'staging'
    RETURNING status INTO current_status;
    IF current_status IS NULL THEN
        IF EXISTS (SELECT 1 FROM billing_ledger_imports WHERE import_id = p_import_id) THEN
            RETURN 0;
        END IF;
        RAISE EXCEPTION 'ledger import % is not staging: idle for over an hour, it was cleaned up',
            p_import_id
            USING ERRCODE = 'P0001', HINT = 'run the import again';
    END IF;
    INSERT INTO billing_ledger_import_rows (import_id, seq, customer_id, kind, amount,
        currency, occurred_at, invoice_id, description, external_id)
    SELECT p_import_id, p_first_seq + r.ord - 1, r.v->>0, r.v->>1, (r.v->>2)::bigint, r.v->>3,
        (r.v->>4)::timestamptz, r.v->>5, r.v->>6, r.v->>7
    FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS r(v, ord)
    ON CONFLICT (import_id, seq) DO NOTHING;
    GET DIAGNOSTICS staged = ROW_COUNT;
    RETURN staged;
END
$$;

-- Move a staged import into the ledger in this one transaction (PostgresStore.import_ledger
-- ported): every staged row in order with ON CONFLICT (external_id) DO NOTHING, then, if a
-- row was skipped, one join of the staged rows with the ledger finds each reuse of an
-- external_id with other facts, naming the row and the earlier version (a recorded entry,
-- or the import's own earlier row). With a conflict, or for a dry run, the insert is undone
-- (a subtransaction) and only the verdict is kept. p_rows is how many rows the caller
-- staged: a commit that finds another number refuses, so no lost stage goes unnoticed.
-- The result: {"inserted", "duplicates", "conflicts": [first 20], "conflict_count"}.
-- Repeating the commit returns the first verdict. statement_timeout is hoisted by
-- PostgREST (db-hoisted-tx-settings): a million rows take longer than the role's 8 s.
CREATE OR REPLACE FUNCTION billing_api_ledger_import_commit(
    p_import_id uuid, p_rows bigint, p_now timestamptz, p_dry_run boolean
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = public, pg_temp SET statement_timeout = '10min' AS $$
DECLARE
    staging billing_ledger_imports;
    staged bigint;
    last_seq bigint;
    last_id_before bigint;
    inserted bigint := 0;
    conflicts jsonb := '[]'::jsonb;
    conflict_count bigint := 0;
    verdict jsonb;
BEGIN
    SELECT * INTO staging FROM billing_ledger_imports WHERE import_id = p_import_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger import % is not staging: idle for over an hour, it was cleaned up',
            p_import_id
            USING ERRCODE = 'P0001', HINT = 'run the import again';
    END IF;
    IF staging.status <> 'staging' THEN
        RETURN staging.result;
    END IF;
    SELECT count(*), coalesce(max(seq), 0) INTO staged, last_seq
    FROM billing_ledger_import_rows WHERE import_id = p_import_id;
    IF staged <> p_rows OR last_seq <> p_rows THEN
        RAISE EXCEPTION 'ledger import % holds % staged rows, not the % sent', p_import_id,
            staged, p_rows
            USING ERRCODE = 'P0001', HINT = 'run the import again';
    END IF;
    BEGIN
        SELECT coalesce(max(id), 0) INTO last_id_before FROM billing_usage_ledger;
        INSERT INTO billing_usage_ledger (customer_id, kind, amount, currency, occurred_at,
            invoice_id, description, external_id, created_at)
        SELECT customer_id, kind, amount, currency, occurred_at, invoice_id, description,
            external_id, p_now
        FROM billing_ledger_import_rows WHERE import_id = p_import_id ORDER BY seq
        ON CONFLICT (external_id) DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF inserted < staged THEN
            -- After the insert, so that an entry another session committed meanwhile (which
            -- ON CONFLICT waited for and skipped) is judged too. The earlier version is the
            -- import's own first row of that external_id when the entry came from this
            -- insert (an id past last_id_before, created at p_now) and that row holds the
            -- entry's facts; else the recorded entry. (PostgresStore asks only the first
            -- two, so it names a row when a rival import with the same now won the race.)
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'given_row', c.seq,
                    'entry_id', c.entry_id,
                    'recorded_row', CASE WHEN c.from_import THEN (
                        SELECT min(s.seq) FROM billing_ledger_import_rows s
                        WHERE s.import_id = p_import_id AND s.external_id = c.external_id
                          AND s.seq < c.seq
                          AND s.customer_id = (c.recorded->>'customer_id')
                          AND s.kind = (c.recorded->>'kind')
                          AND s.amount = (c.recorded->>'amount')::bigint
                          AND s.currency = (c.recorded->>'currency')
                          AND s.occurred_at = (c.recorded->>'occurred_at')::timestamptz
                          AND s.invoice_id IS NOT DISTINCT FROM (c.recorded->>'invoice_id'))
                    END,
                    'external_id', c.external_id,
                    'recorded', c.recorded,
                    'given', c.given) ORDER BY c.seq), '[]'::jsonb)
            INTO conflicts
            FROM (
                SELECT given.seq, recorded.id AS entry_id, given.external_id,
                    (recorded.id > last_id_before AND recorded.created_at = p_now) AS from_import,
                    jsonb_build_object('customer_id', recorded.customer_id,
                        'kind', recorded.kind, 'amount', recorded.amount,
                        'currency', recorded.currency, 'occurred_at', recorded.occurred_at,
                        'invoice_id', recorded.invoice_id) AS recorded,
                    jsonb_build_object('customer_id', given.customer_id,
                        'kind', given.kind, 'amount', given.amount,
                        'currency', given.currency, 'occurred_at', given.occurred_at,
                        'invoice_id', given.invoice_id) AS given
                FROM billing_ledger_import_rows given
                JOIN billing_usage_ledger recorded ON recorded.external_id = given.external_id
                WHERE given.import_id = p_import_id
                  AND NOT (given.customer_id IS NOT DISTINCT FROM recorded.customer_id
                       AND given.kind IS NOT DISTINCT FROM recorded.kind
                       AND given.amount IS NOT DISTINCT FROM recorded.amount
                       AND given.currency IS NOT DISTINCT FROM recorded.currency
                       AND given.occurred_at IS NOT DISTINCT FROM recorded.occurred_at
                       AND given.invoice_id IS NOT DISTINCT FROM recorded.invoice_id)
                ORDER BY given.seq
                LIMIT 20
            ) AS c;
            conflict_count := jsonb_array_length(conflicts);
            IF conflict_count >= 20 THEN
                SELECT count(*) INTO conflict_count
                FROM billing_ledger_import_rows given
                JOIN billing_usage_ledger recorded ON recorded.external_id = given.external_id
                WHERE given.import_id = p_import_id
                  AND NOT (given.customer_id IS NOT DISTINCT FROM recorded.customer_id
                       AND given.kind IS NOT DISTINCT FROM recorded.kind
                       AND given.amount IS NOT DISTINCT FROM recorded.amount
                       AND given.currency IS NOT DISTINCT FROM recorded.currency
                       AND given.occurred_at IS NOT DISTINCT FROM recorded.occurred_at
                       AND given.invoice_id IS NOT DISTINCT FROM recorded.invoice_id);
            END IF;
        END IF;
        IF p_dry_run OR conflict_count > 0 THEN
            -- Undo the insert: only this block's subtransaction rolls back.
            RAISE EXCEPTION USING ERRCODE = 'BLUND';
        END IF;
    EXCEPTION WHEN SQLSTATE 'BLUND' THEN
        NULL;
    END;
    verdict := jsonb_build_object('inserted', inserted, 'duplicates', staged - inserted,
        'conflicts', conflicts, 'conflict_count', conflict_count);
    UPDATE billing_ledger_imports
    SET status = CASE WHEN conflict_count > 0 THEN 'refused'
                      WHEN p_dry_run THEN 'dry_run' ELSE 'committed' END,
        result = verdict, touched_at = now()
    WHERE import_id = p_import_id;
    DELETE FROM billing_ledger_import_rows WHERE import_id = p_import_id;
    RETURN verdict;
END
$$;

-- An import that fits in one request: stage and commit in one transaction.
CREATE OR REPLACE FUNCTION billing_api_import_ledger(
    p_import_id uuid, p_rows jsonb, p_now timestamptz, p_dry_run boolean
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = public, pg_temp SET statement_timeout = '10min' AS $$
BEGIN
    PERFORM billing_api_ledger_import_stage(p_import_id, 1, p_rows);
    RETURN billing_api_ledger_import_commit(
        p_import_id, jsonb_array_length(p_rows), p_now, p_dry_run);
END
$$;

-- Where an import stands, for a caller whose commit got no answer (a timeout, a dropped
-- connection, a gateway error): {"status", "result": the verdict once there is one,
-- "committing": whether a commit holds the import now}. A running commit holds the
-- import's row lock, which SKIP LOCKED finds without waiting for it. VOLATILE: FOR UPDATE
-- needs a read-write transaction.
CREATE OR REPLACE FUNCTION billing_api_ledger_import_state(p_import_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    found_status text;
    found_result jsonb;
BEGIN
    SELECT status, result INTO found_status, found_result
    FROM billing_ledger_imports WHERE import_id = p_import_id;
    IF found_status IS NULL OR found_status <> 'staging' THEN
        RETURN jsonb_build_object('status', found_status, 'result', found_result,
            'committing', false);
    END IF;
    PERFORM 1 FROM billing_ledger_imports WHERE import_id = p_import_id
    FOR UPDATE SKIP LOCKED;
    RETURN jsonb_build_object('status', found_status, 'result', NULL, 'committing', NOT FOUND);
END
$$;

-- An import given up by its caller (its rows failed to read): its staging goes at once.
CREATE OR REPLACE FUNCTION billing_api_ledger_import_discard(p_import_id uuid) RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    DELETE FROM billing_ledger_imports WHERE import_id = p_import_id AND status = 'staging'
$$;

-- --- finance: reconciliation and dashboard aggregates ----------------------------------
-- Sums are computed here, per currency, never across currencies, and returned whole in one
-- answer: a reconciliation must add up one snapshot, which pages (one transaction each)
-- could not give. Their size is bounded by customers × currencies, not by rows.

-- [[customer_id, currency, sum], …] of ledger entries that occurred in [p_start, p_end).
CREATE OR REPLACE FUNCTION billing_api_ledger_window_totals(
    p_start timestamptz, p_end timestamptz, p_customer_id text
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(t.customer_id, t.currency, t.total)), '[]')
    FROM (
        SELECT customer_id, currency, sum(amount) AS total FROM billing_usage_ledger
        WHERE occurred_at >= p_start AND occurred_at < p_end
          AND (p_customer_id IS NULL OR customer_id = p_customer_id)
        GROUP BY customer_id, currency
    ) AS t
$$;

-- [[customer_id, currency, sum], …] of invoices created in the window that bill
-- (p_not_billed: domain.statuses.NOT_BILLED_STATUSES), total_excluding_tax else total.
CREATE OR REPLACE FUNCTION billing_api_mirror_invoice_totals(
    p_start timestamptz, p_end timestamptz, p_customer_id text, p_not_billed text[]
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(t.customer_id, t.currency, t.total)), '[]')
    FROM (
        SELECT customer_id, currency, sum(coalesce(total_excluding_tax, total)) AS total
        FROM billing_invoices
        WHERE stripe_created >= p_start AND stripe_created < p_end
          AND status <> ALL (p_not_billed)
          AND (p_customer_id IS NULL OR customer_id = p_customer_id)
        GROUP BY customer_id, currency
    ) AS t
$$;

CREATE OR REPLACE FUNCTION billing_api_mirror_invoice_count(
    p_start timestamptz, p_end timestamptz, p_customer_id text, p_not_billed text[]
) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_invoices
    WHERE stripe_created >= p_start AND stripe_created < p_end
      AND status <> ALL (p_not_billed)
      AND (p_customer_id IS NULL OR customer_id = p_customer_id)
$$;

-- One customer's invoices created in the window (every status), oldest first, by the key
-- (stripe_created, id): [{"id", "stripe_created", "status", "raw"}, …].
CREATE OR REPLACE FUNCTION billing_api_mirror_invoices(
    p_customer_id text, p_start timestamptz, p_end timestamptz, p_after jsonb,
    p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', page.id,
        'stripe_created', page.stripe_created, 'status', page.status, 'raw', page.raw)
        ORDER BY page.stripe_created, page.id), '[]')
    FROM (
        SELECT id, stripe_created, status, raw FROM billing_invoices
        WHERE customer_id = p_customer_id
          AND stripe_created >= p_start AND stripe_created < p_end
          AND (p_after IS NULL OR (stripe_created, id)
               > ((p_after->>'stripe_created')::timestamptz, p_after->>'id'))
        ORDER BY stripe_created, id
        LIMIT p_limit
    ) AS page
$$;

-- One customer's entries in the window, oldest first, by the key (occurred_at, id).
CREATE OR REPLACE FUNCTION billing_api_ledger_entries(
    p_customer_id text, p_start timestamptz, p_end timestamptz, p_after jsonb,
    p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page.*)
        ORDER BY page.occurred_at, page.id), '[]')
    FROM (
        SELECT * FROM billing_usage_ledger
        WHERE customer_id = p_customer_id AND occurred_at >= p_start AND occurred_at < p_end
          AND (p_after IS NULL OR (occurred_at, id)
               > ((p_after->>'occurred_at')::timestamptz, (p_after->>'id')::bigint))
        ORDER BY occurred_at, id
        LIMIT p_limit
    ) AS page
$$;

-- [[invoice_id, currency, sum], …] over all time for these invoices.
CREATE OR REPLACE FUNCTION billing_api_ledger_sums_by_invoice(p_invoice_ids text[])
RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(t.invoice_id, t.currency, t.total)), '[]')
    FROM (
        SELECT invoice_id, currency, sum(amount) AS total FROM billing_usage_ledger
        WHERE invoice_id = ANY (p_invoice_ids)
        GROUP BY invoice_id, currency
    ) AS t
$$;

-- Past-due invoices (open, and either overdue or already failed once: what finance
-- chases; sql_finance's _PAST_DUE), oldest due first, by the key (due_date or else creation, id).
CREATE OR REPLACE FUNCTION billing_api_past_due_invoices(
    p_now timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', page.id,
        'customer_id', page.customer_id, 'number', page.number, 'currency', page.currency,
        'amount_due', page.amount_due, 'amount_remaining', page.amount_remaining,
        'due_date', page.due_date, 'attempt_count', page.attempt_count,
        'first_failed_at', page.first_failed_at,
        'hosted_invoice_url', page.hosted_invoice_url, 'sort_at', page.sort_at)
        ORDER BY page.sort_at, page.id), '[]')
    FROM (
        SELECT i.*, coalesce(i.due_date, i.stripe_created) AS sort_at FROM billing_invoices i
        WHERE i.status = 'open' AND ((i.due_date IS NOT NULL AND i.due_date < p_now)
              OR i.attempt_count > 0 OR i.first_failed_at IS NOT NULL)
          AND (p_after IS NULL OR (coalesce(i.due_date, i.stripe_created), i.id)
               > ((p_after->>'sort_at')::timestamptz, p_after->>'id'))
        ORDER BY coalesce(i.due_date, i.stripe_created), i.id
        LIMIT p_limit
    ) AS page
$$;

-- Open alerts, oldest first, by the key (created_at, id).
CREATE OR REPLACE FUNCTION billing_api_open_alerts(p_after jsonb, p_limit integer)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', page.id, 'type', page.type,
        'status', page.status, 'customer_id', page.customer_id,
        'invoice_id', page.invoice_id, 'amount_due', page.amount_due,
        'currency', page.currency, 'created_at', page.created_at)
        ORDER BY page.created_at, page.id), '[]')
    FROM (
        SELECT * FROM billing_alerts
        WHERE status = 'open'
          AND (p_after IS NULL OR (created_at, id)
               > ((p_after->>'created_at')::timestamptz, (p_after->>'id')::bigint))
        ORDER BY created_at, id
        LIMIT p_limit
    ) AS page
$$;

-- [[currency, sum], …] of one kind of entry in the window.
CREATE OR REPLACE FUNCTION billing_api_ledger_kind_totals(
    p_start timestamptz, p_end timestamptz, p_kind text
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(t.currency, t.total) ORDER BY t.currency), '[]')
    FROM (
        SELECT currency, sum(amount) AS total FROM billing_usage_ledger
        WHERE occurred_at >= p_start AND occurred_at < p_end AND kind = p_kind
        GROUP BY currency
    ) AS t
$$;

-- {type: count} of open alerts.
CREATE OR REPLACE FUNCTION billing_api_open_alert_counts() RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(t.type, t.n), '{}')
    FROM (SELECT type, count(*) AS n FROM billing_alerts WHERE status = 'open' GROUP BY type) t
$$;

-- [[currency, count, sum of amount_remaining], …] of past-due invoices.
CREATE OR REPLACE FUNCTION billing_api_past_due_totals(p_now timestamptz) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(t.currency, t.n, t.total)
        ORDER BY t.currency), '[]')
    FROM (
        SELECT i.currency, count(*) AS n, sum(i.amount_remaining) AS total
        FROM billing_invoices i
        WHERE i.status = 'open' AND ((i.due_date IS NOT NULL AND i.due_date < p_now)
              OR i.attempt_count > 0 OR i.first_failed_at IS NOT NULL)
        GROUP BY i.currency
    ) AS t
$$;

-- {"due": scheduled steps due before p_due_before, "needs_review": steps to review}.
CREATE OR REPLACE FUNCTION billing_api_dunning_workload(p_due_before timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object(
        'due', count(*) FILTER (WHERE status = 'scheduled' AND due_at < p_due_before),
        'needs_review', count(*) FILTER (WHERE status = 'needs_review'))
    FROM billing_dunning_events WHERE status IN ('scheduled', 'needs_review')
$$;

-- Subscriptions whose status counts towards MRR (p_statuses: domain.statuses
-- COUNTED_STATUSES), by id.
CREATE OR REPLACE FUNCTION billing_api_recurring_subscriptions(
    p_statuses text[], p_after text, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', page.id,
        'customer_id', page.customer_id, 'status', page.status, 'currency', page.currency,
        'cancel_at_period_end', page.cancel_at_period_end,
        'current_period_end', page.current_period_end,
        'collection_paused', page.collection_paused, 'livemode', page.livemode,
        'raw', page.raw, 'stripe_created', page.stripe_created) ORDER BY page.id), '[]')
    FROM (
        SELECT * FROM billing_subscriptions
        WHERE status = ANY (p_statuses) AND (p_after IS NULL OR id > p_after)
        ORDER BY id
        LIMIT p_limit
    ) AS page
$$;

-- --- exports: a page at a time, by key --------------------------------------------------
-- The ledger export's order is sql_finance.LEDGER_EXPORT_ORDER: (occurred_at, customer_id,
-- currency, amount, kind, id). The index on occurred_at gives the first key in order, so a
-- page is an index scan from the last key's time with an incremental sort of its ties,
-- never a sort of the rest of the window. The ledger only grows, so "ids up to p_bound"
-- (the highest id when the export started, which its first page returns) is the ledger
-- as it was then: entries recorded while the export runs stay out of it, as they would in
-- one transaction.

-- {"bound": id, "rows": [entry, …]}: entries with occurred_at in [p_start, p_end).
CREATE OR REPLACE FUNCTION billing_api_stream_ledger(
    p_start timestamptz, p_end timestamptz, p_bound bigint, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    bound bigint := coalesce(p_bound, (SELECT coalesce(max(id), 0) FROM billing_usage_ledger));
    page jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(to_jsonb(p.*) ORDER BY p.occurred_at, p.customer_id,
        p.currency, p.amount, p.kind, p.id), '[]')
    INTO page
    FROM (
        SELECT * FROM billing_usage_ledger l
        WHERE l.occurred_at >= greatest(p_start, (p_after->>'occurred_at')::timestamptz)
          AND l.occurred_at < p_end AND l.id <= bound
          AND (p_after IS NULL
               OR (l.occurred_at, l.customer_id, l.currency, l.amount, l.kind, l.id)
                  > ((p_after->>'occurred_at')::timestamptz, p_after->>'customer_id',
                     p_after->>'currency', (p_after->>'amount')::bigint, p_after->>'kind',
                     (p_after->>'id')::bigint))
        ORDER BY l.occurred_at, l.customer_id, l.currency, l.amount, l.kind, l.id
        LIMIT p_limit
    ) AS p;
    RETURN jsonb_build_object('bound', bound, 'rows', page);
END
$$;

-- The ledger export's body a page at a time, built here: domain.export.ledger_line for
-- each entry billing_api_stream_ledger gives. {"bound", "lines", "rows", "after": the last
-- row's key (null for an empty page)}. The cells are domain.export's: text_cell (empty is
-- absent; a formula gets a leading '; quoted when it holds " , CR or LF), time_cell, and
-- to_major_string (p_zero, p_three: the currencies with no and with three decimals,
-- domain.money's ZERO_DECIMAL and THREE_DECIMAL).
CREATE OR REPLACE FUNCTION billing_api_ledger_csv_page(
    p_start timestamptz, p_end timestamptz, p_bound bigint, p_after jsonb, p_limit integer,
    p_zero text[], p_three text[]
) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    bound bigint := coalesce(p_bound, (SELECT coalesce(max(id), 0) FROM billing_usage_ledger));
    -- %1$s is the column (sql_finance's _sql_text_cell, then CSV quoting).
    text_cell constant text := $cell$(CASE WHEN coalesce(%1$s, '') = '' THEN ''
        WHEN %1$s ~ '[",\r\n]' THEN '"' || replace((CASE WHEN left(%1$s, 1) IN
            ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' ELSE '' END) || %1$s, '"', '""') || '"'
        ELSE (CASE WHEN left(%1$s, 1) IN ('=', '+', '-', '@', chr(9), chr(13))
            THEN '''' ELSE '' END) || %1$s END)$cell$;
    time_cell constant text :=
        $cell$to_char(%1$s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')$cell$;
    -- %1$s: how many decimals, %2$s: 10 to that power.
    scaled constant text := $cell$((CASE WHEN p.amount < 0 THEN '-' ELSE '' END)
        || (abs(p.amount) / %2$s)::text || '.' || lpad((abs(p.amount) %% %2$s)::text, %1$s, '0'))$cell$;
    line text;
    result jsonb;
BEGIN
    line := concat_ws(' || '','' || ',
        'p.id::text', format(time_cell, 'p.occurred_at'), format(text_cell, 'p.customer_id'),
        format(text_cell, 'p.kind'), 'p.amount::text',
        format('(CASE WHEN p.currency = ANY ($6) THEN p.amount::text '
               'WHEN p.currency = ANY ($7) THEN %s ELSE %s END)',
               format(scaled, 3, 1000), format(scaled, 2, 100)),
        format(text_cell, 'p.currency'), format(text_cell, 'p.invoice_id'),
        format(text_cell, 'p.description'), format(text_cell, 'p.external_id'),
        format(time_cell, 'p.created_at'));
    EXECUTE format($query$
        SELECT jsonb_build_object(
            'lines', coalesce(string_agg(%s || chr(10), '' ORDER BY p.occurred_at,
                p.customer_id, p.currency, p.amount, p.kind, p.id), ''),
            'rows', count(*),
            'after', (array_agg(jsonb_build_object('occurred_at', p.occurred_at,
                'customer_id', p.customer_id, 'currency', p.currency, 'amount', p.amount,
                'kind', p.kind, 'id', p.id) ORDER BY p.occurred_at DESC, p.customer_id DESC,
                p.currency DESC, p.amount DESC, p.kind DESC, p.id DESC))[1])
        FROM (
            SELECT * FROM billing_usage_ledger l
            WHERE l.occurred_at >= greatest($1, ($4->>'occurred_at')::timestamptz)
              AND l.occurred_at < $2 AND l.id <= $3
              AND ($4 IS NULL
                   OR (l.occurred_at, l.customer_id, l.currency, l.amount, l.kind, l.id)
                      > (($4->>'occurred_at')::timestamptz, $4->>'customer_id',
                         $4->>'currency', ($4->>'amount')::bigint, $4->>'kind',
                         ($4->>'id')::bigint))
            ORDER BY l.occurred_at, l.customer_id, l.currency, l.amount, l.kind, l.id
            LIMIT $5
        ) AS p
    $query$, line)
    INTO result
    USING p_start, p_end, bound, p_after, p_limit, p_zero, p_three;
    RETURN result || jsonb_build_object('bound', bound);
END
$$;

-- Alerts created in [p_start, p_end), oldest first, by (created_at, id): the export's
-- columns (sql_finance.ALERT_FIELDS).
CREATE OR REPLACE FUNCTION billing_api_stream_alerts(
    p_start timestamptz, p_end timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', page.id, 'type', page.type,
        'status', page.status, 'customer_id', page.customer_id,
        'invoice_id', page.invoice_id, 'amount_due', page.amount_due,
        'currency', page.currency, 'stripe_event_id', page.stripe_event_id,
        'attempt_count', page.attempt_count, 'last_failure', page.last_failure,
        'created_at', page.created_at, 'updated_at', page.updated_at,
        'acknowledged_at', page.acknowledged_at, 'resolved_at', page.resolved_at,
        'resolution', page.resolution) ORDER BY page.created_at, page.id), '[]')
    FROM (
        SELECT * FROM billing_alerts
        WHERE created_at >= p_start AND created_at < p_end
          AND (p_after IS NULL OR (created_at, id)
               > ((p_after->>'created_at')::timestamptz, (p_after->>'id')::bigint))
        ORDER BY created_at, id
        LIMIT p_limit
    ) AS page
$$;

-- Dunning steps due in [p_start, p_end), earliest first, by (due_at, id): the export's
-- columns (domain.export.DUNNING_COLUMNS).
CREATE OR REPLACE FUNCTION billing_api_stream_dunning(
    p_start timestamptz, p_end timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', page.id,
        'invoice_id', page.invoice_id, 'customer_id', page.customer_id,
        'alert_id', page.alert_id, 'day', page.day, 'channel', page.channel,
        'template', page.template, 'status', page.status, 'due_at', page.due_at,
        'sent_at', page.sent_at, 'attempts', page.attempts, 'last_error', page.last_error,
        'reason', page.reason, 'created_at', page.created_at, 'updated_at', page.updated_at)
        ORDER BY page.due_at, page.id), '[]')
    FROM (
        SELECT * FROM billing_dunning_events
        WHERE due_at >= p_start AND due_at < p_end
          AND (p_after IS NULL OR (due_at, id)
               > ((p_after->>'due_at')::timestamptz, (p_after->>'id')::bigint))
        ORDER BY due_at, id
        LIMIT p_limit
    ) AS page
$$;

-- How many rows an export of 'ledger', 'alerts' or 'dunning' holds; NULL for another.
CREATE OR REPLACE FUNCTION billing_api_export_row_count(
    p_dataset text, p_start timestamptz, p_end timestamptz
) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT CASE p_dataset
        WHEN 'ledger' THEN (SELECT count(*) FROM billing_usage_ledger
                            WHERE occurred_at >= p_start AND occurred_at < p_end)
        WHEN 'alerts' THEN (SELECT count(*) FROM billing_alerts
                            WHERE created_at >= p_start AND created_at < p_end)
        WHEN 'dunning' THEN (SELECT count(*) FROM billing_dunning_events
                             WHERE due_at >= p_start AND due_at < p_end)
    END
$$;

-- --- audit -------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing_api_append_audit(
    p_actor text, p_action text, p_target text, p_outcome text, p_idempotency_key text,
    p_details jsonb, p_now timestamptz
) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    INSERT INTO billing_audit_log
        (occurred_at, actor, action, target, outcome, idempotency_key, details)
    VALUES (p_now, p_actor, p_action, p_target, p_outcome, p_idempotency_key,
        coalesce(p_details, '{}'::jsonb))
    RETURNING id
$$;

-- Audit lines about one target (p_target) or in [p_since, p_until), oldest first, by the
-- key (occurred_at, id).
CREATE OR REPLACE FUNCTION billing_api_audit_lines(
    p_target text, p_since timestamptz, p_until timestamptz, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', page.id,
        'occurred_at', page.occurred_at, 'actor', page.actor, 'action', page.action,
        'target', page.target, 'outcome', page.outcome,
        'idempotency_key', page.idempotency_key, 'details', page.details)
        ORDER BY page.occurred_at, page.id), '[]')
    FROM (
        SELECT * FROM billing_audit_log
        WHERE (p_target IS NULL OR target = p_target)
          AND (p_since IS NULL OR occurred_at >= p_since)
          AND (p_until IS NULL OR occurred_at < p_until)
          AND (p_after IS NULL OR (occurred_at, id)
               > ((p_after->>'occurred_at')::timestamptz, (p_after->>'id')::bigint))
        ORDER BY occurred_at, id
        LIMIT p_limit
    ) AS page
$$;

-- ==== end section: ledger, finance, audit ====

-- ==== section: exemptions, recovery (adapters/store/supabase/recovery.py) ====

-- --- dunning exemptions (sql_exemptions.py) -----------------------------------------

-- Each exempt and unexempt is one call: the change and its audit line in one transaction,
-- so the log never says a customer was exempted when they were not. The store refuses
-- what the table refuses (an id that is no cus_ id: its CHECK, SQLSTATE 23514); an id
-- the mirror does not know is refused before, by services/dunning/exemptions.py.
-- A repeat (postgrest-py never retries a POST, a caller may) meets the first exemption:
-- already_exempt, the first reason, actor and time kept, as on the SQL store.

-- A time as domain.timefmt.iso_z writes it in the audit log (2026-11-24T09:00:00Z, with
-- the microseconds only when there are some), whatever the session's time zone.
CREATE OR REPLACE FUNCTION billing_api_exemption_time(p_moment timestamptz) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_char(p_moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM p_moment)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(p_moment AT TIME ZONE 'UTC', '.US') END
        || 'Z'
$$;

-- Exempt a customer: {"exemption": the row in force, "created": whether this call made
-- it}, audited as dunning.exempt (exempted, or already_exempt with the reason given).
-- Tried three times, as sql_exemptions.py's EXEMPT_TRIES: a concurrent unexempt can
-- delete the row the insert just met before it is read.
CREATE OR REPLACE FUNCTION billing_api_exempt_customer(
    p_customer_id text, p_reason text, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    kept billing_dunning_exemptions;
BEGIN
    FOR attempt IN 1..3 LOOP
        INSERT INTO billing_dunning_exemptions (customer_id, reason, actor, created_at)
        VALUES (p_customer_id, p_reason, p_actor, p_now)
        ON CONFLICT (customer_id) DO NOTHING
        RETURNING * INTO kept;
        IF FOUND THEN
            INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
            VALUES (p_now, p_actor, 'dunning.exempt', p_customer_id, 'exempted',
                    jsonb_build_object('reason', p_reason));
            RETURN jsonb_build_object('exemption', to_jsonb(kept), 'created', true);
        END IF;
        -- Each statement of a VOLATILE function reads the latest commits: the row the
        -- insert met, unless an unexempt has deleted it since.
        SELECT * INTO kept FROM billing_dunning_exemptions WHERE customer_id = p_customer_id;
        IF FOUND THEN
            INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
            VALUES (p_now, p_actor, 'dunning.exempt', p_customer_id, 'already_exempt',
                    jsonb_build_object(
                        'reason', p_reason,
                        'exempt_reason', kept.reason,
                        'exempted_by', kept.actor,
                        'exempted_at', billing_api_exemption_time(kept.created_at)));
            RETURN jsonb_build_object('exemption', to_jsonb(kept), 'created', false);
        END IF;
    END LOOP;
    RAISE EXCEPTION 'exempting % raced an unexempt 3 times', p_customer_id
        USING ERRCODE = '40001';
END
$$;

-- End a customer's exemption: the exemption ended, audited as dunning.unexempt
-- (unexempted, with it); NULL for a customer who was not exempt (audited as not_exempt).
CREATE OR REPLACE FUNCTION billing_api_unexempt_customer(
    p_customer_id text, p_actor text, p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    ended billing_dunning_exemptions;
BEGIN
    DELETE FROM billing_dunning_exemptions WHERE customer_id = p_customer_id
    RETURNING * INTO ended;
    IF NOT FOUND THEN
        INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
        VALUES (p_now, p_actor, 'dunning.unexempt', p_customer_id, 'not_exempt', '{}'::jsonb);
        RETURN NULL;
    END IF;
    INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
    VALUES (p_now, p_actor, 'dunning.unexempt', p_customer_id, 'unexempted',
            jsonb_build_object(
                'exempt_reason', ended.reason,
                'exempted_by', ended.actor,
                'exempted_at', billing_api_exemption_time(ended.created_at)));
    RETURN to_jsonb(ended);
END
$$;

CREATE OR REPLACE FUNCTION billing_api_get_exemption(p_customer_id text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(x) FROM billing_dunning_exemptions x WHERE x.customer_id = p_customer_id
$$;

-- Exemptions in force, oldest first (all, or those of p_customer_ids, a JSON array),
-- paged by (created_at, customer_id): p_after is the last row's key, {"created_at",
-- "customer_id"}.
CREATE OR REPLACE FUNCTION billing_api_list_exemptions(
    p_customer_ids jsonb, p_after jsonb, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.created_at, page.customer_id),
                    '[]'::jsonb)
    FROM (
        SELECT x.* FROM billing_dunning_exemptions x
        WHERE (p_customer_ids IS NULL
               OR x.customer_id IN (SELECT jsonb_array_elements_text(p_customer_ids)))
          AND (p_after IS NULL OR (x.created_at, x.customer_id)
               > ((p_after ->> 'created_at')::timestamptz, p_after ->> 'customer_id'))
        ORDER BY x.created_at, x.customer_id
        LIMIT p_limit
    ) page
$$;

CREATE OR REPLACE FUNCTION billing_api_count_exemptions() RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT count(*) FROM billing_dunning_exemptions
$$;

-- --- recovery (sql_recovery.py) -----------------------------------------------------

-- The recovery figures' invoices (dunning report, the dashboard, export-csv --dataset
-- recovery): those whose first failure lies in [p_start, p_end), by id, a page at a time
-- (id > p_after, p_limit of them), each with its touches. One call reads a page and its
-- touches in one snapshot, so a step sent between two calls is on its invoice's page or
-- not at all, never half. The result is one jsonb value, which db-max-rows does not cut.
--
-- Each invoice, as sql_recovery.py's _FAILED_INVOICES reads it:
-- * "paid_when_settled": paid, and its earliest settling event was the payment
--   (settled_resolution is domain.merge's SETTLEMENT_RESOLUTIONS["paid"] + " (<event>)"),
--   so settled_at is the payment time;
-- * "stripe_paid_at": otherwise, for a paid invoice, Stripe's
--   raw.status_transitions.paid_at as the object holds it (the caller keeps it only when
--   it is a whole number of seconds), instead of the whole object;
-- * "exhausted_at": when its first dunning_exhausted alert was opened; "exempt_since":
--   when its customer was exempted, if they are exempt now;
-- * "touches": the steps sent (a mark-sent step too), the links resent (resend-link,
--   outcome sent) and a retry that paid it (audited on the invoice's id), by time.
CREATE OR REPLACE FUNCTION billing_api_failed_invoices(
    p_start timestamptz, p_end timestamptz, p_after text, p_limit integer
) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', page.id,
        'customer_id', page.customer_id,
        'currency', page.currency,
        'status', page.status,
        'amount_due', page.amount_due,
        'amount_paid', page.amount_paid,
        'first_failed_at', page.first_failed_at,
        'settled_at', page.settled_at,
        'paid_when_settled', page.paid_when_settled,
        'stripe_paid_at', page.stripe_paid_at,
        'exhausted_at', page.exhausted_at,
        'exempt_since', page.exempt_since,
        'decline_code', page.last_decline_code,
        'advice_code', page.last_advice_code,
        'touches', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'kind', t.kind, 'day', t.day, 'channel', t.channel, 'at', t.at)
                   ORDER BY t.at, t.kind, t.day, t.channel)
            FROM (
                SELECT 'step' AS kind, d.day, d.channel, d.sent_at AS at
                FROM billing_dunning_events d
                WHERE d.invoice_id = page.id AND d.status = 'sent' AND d.sent_at IS NOT NULL
                UNION ALL
                SELECT CASE WHEN a.action = 'retry' THEN 'manual_retry' ELSE 'pay_link' END,
                       NULL, NULL, a.occurred_at
                FROM billing_audit_log a
                WHERE a.target = page.id
                  AND ((a.action = 'retry' AND a.outcome = 'paid')
                       OR (a.action = 'resend-link' AND a.outcome = 'sent'))
            ) t
        ), '[]'::jsonb)
    ) ORDER BY page.id), '[]'::jsonb)
    FROM (
        SELECT i.id, i.customer_id, i.currency, i.status, i.amount_due, i.amount_paid,
               i.first_failed_at, i.settled_at,
               coalesce(i.status = 'paid' AND i.settled_resolution LIKE 'invoice paid (%',
                        false) AS paid_when_settled,
               CASE WHEN i.status = 'paid' AND (i.settled_resolution IS NULL
                         OR i.settled_resolution NOT LIKE 'invoice paid (%')
                    THEN i.raw -> 'status_transitions' -> 'paid_at' END AS stripe_paid_at,
               (SELECT min(a.created_at) FROM billing_alerts a
                WHERE a.type = 'dunning_exhausted' AND a.invoice_id = i.id) AS exhausted_at,
               e.created_at AS exempt_since, i.last_decline_code, i.last_advice_code
        FROM billing_invoices i
        LEFT JOIN billing_dunning_exemptions e ON e.customer_id = i.customer_id
        WHERE i.first_failed_at >= p_start AND i.first_failed_at < p_end
          AND i.id > coalesce(p_after, '')
        ORDER BY i.id
        LIMIT p_limit
    ) page
$$;


-- ==== end section: exemptions, recovery ====

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
