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
