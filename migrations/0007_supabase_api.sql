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
            -- details are those of the largest (attempt_count, created, event id).
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
                        OR (v_attempt, v_created, v_event)
                            > (last_failure_attempt, last_failure_at, last_failure_event_id)
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
