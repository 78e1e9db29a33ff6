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


-- --- dunning exemptions (sql_exemptions.py) -----------------------------------------

-- A time as domain.timefmt.iso_z writes it in the audit log: 2026-11-24T09:00:00Z, with
-- microseconds only when there are some.
CREATE OR REPLACE FUNCTION billing_api_iso_z(p_moment timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_char(p_moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_part('microseconds', p_moment)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(p_moment AT TIME ZONE 'UTC', '.US') END
        || 'Z'
$$;

-- Exempt a customer, audited in the same transaction: {"exemption": …, "created": bool}.
-- One already exempt keeps the first reason, actor and time (audited as already_exempt).
-- Tried three times: a concurrent unexempt can delete the row an insert just met.
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
        SELECT * INTO kept FROM billing_dunning_exemptions WHERE customer_id = p_customer_id;
        IF FOUND THEN
            INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
            VALUES (p_now, p_actor, 'dunning.exempt', p_customer_id, 'already_exempt',
                    jsonb_build_object('reason', p_reason, 'exempt_reason', kept.reason,
                                       'exempted_by', kept.actor,
                                       'exempted_at', billing_api_iso_z(kept.created_at)));
            RETURN jsonb_build_object('exemption', to_jsonb(kept), 'created', false);
        END IF;
    END LOOP;
    RAISE EXCEPTION 'exempting % raced an unexempt 3 times', p_customer_id;
END
$$;

-- End a customer's exemption, audited in the same transaction; the exemption ended, NULL
-- (audited as not_exempt) when there was none.
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
        INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome)
        VALUES (p_now, p_actor, 'dunning.unexempt', p_customer_id, 'not_exempt');
        RETURN NULL;
    END IF;
    INSERT INTO billing_audit_log (occurred_at, actor, action, target, outcome, details)
    VALUES (p_now, p_actor, 'dunning.unexempt', p_customer_id, 'unexempted',
            jsonb_build_object('exempt_reason', ended.reason, 'exempted_by', ended.actor,
                               'exempted_at', billing_api_iso_z(ended.created_at)));
    RETURN to_jsonb(ended);
END
$$;

CREATE OR REPLACE FUNCTION billing_api_get_exemption(p_customer_id text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(x) FROM billing_dunning_exemptions x WHERE x.customer_id = p_customer_id
$$;

-- Exemptions in force, oldest first (all, or those of p_customer_ids, a JSON array),
-- paged by (created_at, customer_id).
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
