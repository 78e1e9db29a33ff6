-- cloudgreet-billing schema, version 1.
-- Needs first: nothing. Every numbered file (0002_….sql, …) needs this one first, although
-- a glob or `ls` sorts them before it; the Supabase CLI skips this name altogether.
--
-- Runs on Supabase and on plain PostgreSQL (>= 13), and runs cleanly any number of
-- times: every object is created only if missing. Later changes go in new numbered
-- files (0002_….sql, …), each recording its version in billing_schema_version.
--
-- Apply with `cloudgreet-billing db migrate`, or by hand:
--   psql "$BILLING_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/CREATE_BILLING_INFRASTRUCTURE.sql
-- On Supabase without a database password, see README.md ("Supabase without the database
-- password"): the SQL editor or `supabase db push`, files in version order.
--
-- Money is an integer in the currency's minor unit plus a lowercase ISO currency, as
-- Stripe keeps it. Times are timestamptz (UTC).

BEGIN;

CREATE TABLE IF NOT EXISTS billing_schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Key/value state shared by every worker: the sync cursor, the dunning pause switch.
CREATE TABLE IF NOT EXISTS billing_settings (
    key         text PRIMARY KEY,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text
);

-- Local mirror of Stripe objects. stripe_updated_at is the `created` time of the event
-- that last changed the row, so an older event never overwrites a newer state.
CREATE TABLE IF NOT EXISTS billing_customers (
    id                 text PRIMARY KEY CHECK (id LIKE 'cus\_%'),
    email              text,
    name               text,
    phone              text,
    currency           text CHECK (currency ~ '^[a-z]{3}$'),
    delinquent         boolean NOT NULL DEFAULT false,
    deleted            boolean NOT NULL DEFAULT false,
    livemode           boolean NOT NULL DEFAULT false,
    raw                jsonb NOT NULL,
    stripe_created     timestamptz,
    stripe_updated_at  timestamptz NOT NULL,
    synced_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS billing_subscriptions (
    id                    text PRIMARY KEY CHECK (id LIKE 'sub\_%'),
    customer_id           text NOT NULL,
    status                text NOT NULL,
    currency              text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    cancel_at_period_end  boolean NOT NULL DEFAULT false,
    current_period_end    timestamptz,
    collection_paused     boolean NOT NULL DEFAULT false,
    livemode              boolean NOT NULL DEFAULT false,
    raw                   jsonb NOT NULL,
    stripe_created        timestamptz,
    stripe_updated_at     timestamptz NOT NULL,
    synced_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS billing_invoices (
    id                    text PRIMARY KEY CHECK (id LIKE 'in\_%'),
    customer_id           text NOT NULL,
    subscription_id       text,
    number                text,
    status                text NOT NULL
                          CHECK (status IN ('draft', 'open', 'paid', 'uncollectible', 'void')),
    currency              text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    amount_due            bigint NOT NULL DEFAULT 0,
    amount_paid           bigint NOT NULL DEFAULT 0,
    amount_remaining      bigint NOT NULL DEFAULT 0,
    total                 bigint NOT NULL DEFAULT 0,
    total_excluding_tax   bigint,
    attempt_count         integer NOT NULL DEFAULT 0,
    attempted             boolean NOT NULL DEFAULT false,
    next_payment_attempt  timestamptz,
    due_date              timestamptz,
    hosted_invoice_url    text,
    first_failed_at       timestamptz,
    last_failure_code     text,
    last_failure_message  text,
    livemode              boolean NOT NULL DEFAULT false,
    raw                   jsonb NOT NULL,
    stripe_created        timestamptz NOT NULL,
    stripe_updated_at     timestamptz NOT NULL,
    synced_at             timestamptz NOT NULL DEFAULT now()
);

-- Every Stripe event processed, written in the same transaction as its effects, so a
-- failed handler leaves no record and the event is retried on redelivery.
CREATE TABLE IF NOT EXISTS billing_stripe_events (
    id              text PRIMARY KEY CHECK (id LIKE 'evt\_%'),
    type            text NOT NULL,
    stripe_created  timestamptz NOT NULL,
    livemode        boolean NOT NULL DEFAULT false,
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'skipped')),
    source          text NOT NULL CHECK (source IN ('api', 'webhook', 'file', 'backfill')),
    processed_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS billing_alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type             text NOT NULL CHECK (type IN ('invoice_failed', 'payment_action_required',
                                                   'threshold_exceeded', 'dunning_exhausted')),
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'acknowledged', 'resolved')),
    -- What makes two alerts "the same problem": e.g. invoice_failed:in_123. At most one
    -- unresolved alert per key (index below); a later failure reopens a new one.
    dedupe_key       text NOT NULL,
    customer_id      text,
    invoice_id       text,
    amount_due       bigint,
    currency         text CHECK (currency ~ '^[a-z]{3}$'),
    stripe_event_id  text,
    attempt_count    integer NOT NULL DEFAULT 0,
    last_failure     text,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz,
    resolved_at      timestamptz,
    resolution       text,
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS billing_alert_notes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES billing_alerts (id) ON DELETE CASCADE,
    author      text NOT NULL,
    body        text NOT NULL CHECK (length(body) > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS billing_usage_ledger (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  text NOT NULL CHECK (customer_id LIKE 'cus\_%'),
    kind         text NOT NULL CHECK (kind IN ('subscription', 'booking_fee', 'credit_adjustment')),
    amount       bigint NOT NULL,
    currency     text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    occurred_at  timestamptz NOT NULL,
    invoice_id   text CHECK (invoice_id LIKE 'in\_%'),
    description  text,
    external_id  text UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (amount >= 0 OR kind = 'credit_adjustment')
);

CREATE TABLE IF NOT EXISTS billing_dunning_events (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id           text NOT NULL,
    customer_id          text NOT NULL,
    alert_id             bigint REFERENCES billing_alerts (id) ON DELETE SET NULL,
    day                  integer NOT NULL CHECK (day >= 0),
    channel              text NOT NULL CHECK (channel IN ('email', 'sms')),
    template             text NOT NULL,
    status               text NOT NULL DEFAULT 'scheduled'
                         CHECK (status IN ('scheduled', 'sending', 'sent', 'skipped', 'canceled',
                                           'failed', 'needs_review')),
    due_at               timestamptz NOT NULL,
    claimed_at           timestamptz,
    lease_expires_at     timestamptz,
    claimed_by           text,
    sent_at              timestamptz,
    attempts             integer NOT NULL DEFAULT 0,
    last_error           text,
    reason               text,
    provider_message_id  text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, day, channel)
);

-- Append-only story of every action: intent before a Stripe call, outcome after it.
CREATE TABLE IF NOT EXISTS billing_audit_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL,
    action           text NOT NULL,
    target           text NOT NULL,
    outcome          text NOT NULL,
    idempotency_key  text,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Indexes for the queries the contract implies.
CREATE INDEX IF NOT EXISTS billing_usage_ledger_occurred_idx
    ON billing_usage_ledger (occurred_at) INCLUDE (customer_id, currency, amount, kind);
CREATE INDEX IF NOT EXISTS billing_usage_ledger_customer_idx
    ON billing_usage_ledger (customer_id, occurred_at);
CREATE INDEX IF NOT EXISTS billing_usage_ledger_invoice_idx
    ON billing_usage_ledger (invoice_id) WHERE invoice_id IS NOT NULL;

CREATE UNIQUE INDEX IF NOT EXISTS billing_alerts_unresolved_key
    ON billing_alerts (dedupe_key) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS billing_alerts_status_idx ON billing_alerts (status, created_at);
CREATE INDEX IF NOT EXISTS billing_alerts_invoice_idx ON billing_alerts (invoice_id);
CREATE INDEX IF NOT EXISTS billing_alerts_customer_idx ON billing_alerts (customer_id);
CREATE INDEX IF NOT EXISTS billing_alert_notes_alert_idx ON billing_alert_notes (alert_id);

CREATE INDEX IF NOT EXISTS billing_dunning_events_due_idx
    ON billing_dunning_events (due_at) WHERE status = 'scheduled';
CREATE INDEX IF NOT EXISTS billing_dunning_events_status_idx
    ON billing_dunning_events (status, due_at);
CREATE INDEX IF NOT EXISTS billing_dunning_events_alert_idx ON billing_dunning_events (alert_id);

CREATE INDEX IF NOT EXISTS billing_invoices_customer_idx ON billing_invoices (customer_id);
CREATE INDEX IF NOT EXISTS billing_invoices_status_idx ON billing_invoices (status, due_date);
CREATE INDEX IF NOT EXISTS billing_invoices_created_idx ON billing_invoices (stripe_created);
CREATE INDEX IF NOT EXISTS billing_subscriptions_customer_idx
    ON billing_subscriptions (customer_id);
CREATE INDEX IF NOT EXISTS billing_subscriptions_status_idx ON billing_subscriptions (status);
CREATE INDEX IF NOT EXISTS billing_stripe_events_created_idx
    ON billing_stripe_events (stripe_created);
CREATE INDEX IF NOT EXISTS billing_audit_log_target_idx ON billing_audit_log (target, occurred_at);
CREATE INDEX IF NOT EXISTS billing_audit_log_occurred_idx ON billing_audit_log (occurred_at);

-- Row-level security on every billing table, with no policies: only the service role
-- (which bypasses RLS) and the table owner can read or write. Supabase's default
-- privileges grant new tables to anon and authenticated, so take those grants back.
ALTER TABLE billing_schema_version ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_alert_notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_usage_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_dunning_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_audit_log ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format(
                'REVOKE ALL ON billing_schema_version, billing_settings, billing_customers, '
                'billing_subscriptions, billing_invoices, billing_stripe_events, billing_alerts, '
                'billing_alert_notes, billing_usage_ledger, billing_dunning_events, '
                'billing_audit_log FROM %I', api_role);
            EXECUTE format(
                'REVOKE ALL ON SEQUENCE billing_alerts_id_seq, billing_alert_notes_id_seq, '
                'billing_usage_ledger_id_seq, billing_dunning_events_id_seq, '
                'billing_audit_log_id_seq FROM %I', api_role);
        END IF;
    END LOOP;
END
$$;

INSERT INTO billing_schema_version (version, name)
VALUES (1, 'CREATE_BILLING_INFRASTRUCTURE')
ON CONFLICT (version) DO NOTHING;

COMMIT;
