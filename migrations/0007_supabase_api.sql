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
