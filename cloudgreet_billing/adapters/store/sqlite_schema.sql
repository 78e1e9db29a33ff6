-- The SQLite equivalent of migrations/CREATE_BILLING_INFRASTRUCTURE.sql (version 1).
-- Same tables and columns (a test holds the two together); SQLite types: times are
-- fixed-width ISO 8601 UTC text (so text order is time order), booleans are 0/1,
-- JSON is text. There is no row-level security: the file itself is created mode 0600.

CREATE TABLE IF NOT EXISTS billing_schema_version (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL CHECK (json_valid(value)),
    updated_at  TEXT NOT NULL,
    updated_by  TEXT
);

CREATE TABLE IF NOT EXISTS billing_customers (
    id                 TEXT PRIMARY KEY CHECK (id GLOB 'cus_*'),
    email              TEXT,
    name               TEXT,
    phone              TEXT,
    currency           TEXT CHECK (currency GLOB '[a-z][a-z][a-z]'),
    delinquent         INTEGER NOT NULL DEFAULT 0,
    deleted            INTEGER NOT NULL DEFAULT 0,
    livemode           INTEGER NOT NULL DEFAULT 0,
    raw                TEXT NOT NULL,
    stripe_created     TEXT,
    stripe_updated_at  TEXT NOT NULL,
    synced_at          TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_subscriptions (
    id                    TEXT PRIMARY KEY CHECK (id GLOB 'sub_*'),
    customer_id           TEXT NOT NULL,
    status                TEXT NOT NULL,
    currency              TEXT NOT NULL CHECK (currency GLOB '[a-z][a-z][a-z]'),
    cancel_at_period_end  INTEGER NOT NULL DEFAULT 0,
    current_period_end    TEXT,
    collection_paused     INTEGER NOT NULL DEFAULT 0,
    livemode              INTEGER NOT NULL DEFAULT 0,
    raw                   TEXT NOT NULL,
    stripe_created        TEXT,
    stripe_updated_at     TEXT NOT NULL,
    synced_at             TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_invoices (
    id                    TEXT PRIMARY KEY CHECK (id GLOB 'in_*'),
    customer_id           TEXT NOT NULL,
    subscription_id       TEXT,
    number                TEXT,
    status                TEXT NOT NULL
                          CHECK (status IN ('draft', 'open', 'paid', 'uncollectible', 'void')),
    currency              TEXT NOT NULL CHECK (currency GLOB '[a-z][a-z][a-z]'),
    amount_due            INTEGER NOT NULL DEFAULT 0,
    amount_paid           INTEGER NOT NULL DEFAULT 0,
    amount_remaining      INTEGER NOT NULL DEFAULT 0,
    total                 INTEGER NOT NULL DEFAULT 0,
    total_excluding_tax   INTEGER,
    attempt_count         INTEGER NOT NULL DEFAULT 0,
    attempted             INTEGER NOT NULL DEFAULT 0,
    next_payment_attempt  TEXT,
    due_date              TEXT,
    hosted_invoice_url    TEXT,
    first_failed_at       TEXT,
    last_failure_code     TEXT,
    last_failure_message  TEXT,
    livemode              INTEGER NOT NULL DEFAULT 0,
    raw                   TEXT NOT NULL,
    stripe_created        TEXT NOT NULL,
    stripe_updated_at     TEXT NOT NULL,
    synced_at             TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_stripe_events (
    id              TEXT PRIMARY KEY CHECK (id GLOB 'evt_*'),
    type            TEXT NOT NULL,
    stripe_created  TEXT NOT NULL,
    livemode        INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT NOT NULL CHECK (outcome IN ('applied', 'skipped')),
    source          TEXT NOT NULL CHECK (source IN ('api', 'webhook', 'file', 'backfill')),
    processed_at    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_alerts (
    id               INTEGER PRIMARY KEY,
    type             TEXT NOT NULL CHECK (type IN ('invoice_failed', 'payment_action_required',
                                                   'threshold_exceeded', 'dunning_exhausted')),
    status           TEXT NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'acknowledged', 'resolved')),
    dedupe_key       TEXT NOT NULL,
    customer_id      TEXT,
    invoice_id       TEXT,
    amount_due       INTEGER,
    currency         TEXT CHECK (currency GLOB '[a-z][a-z][a-z]'),
    stripe_event_id  TEXT,
    attempt_count    INTEGER NOT NULL DEFAULT 0,
    last_failure     TEXT,
    details          TEXT NOT NULL DEFAULT '{}',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    acknowledged_at  TEXT,
    resolved_at      TEXT,
    resolution       TEXT,
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS billing_alert_notes (
    id          INTEGER PRIMARY KEY,
    alert_id    INTEGER NOT NULL REFERENCES billing_alerts (id) ON DELETE CASCADE,
    author      TEXT NOT NULL,
    body        TEXT NOT NULL CHECK (length(body) > 0),
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_usage_ledger (
    id           INTEGER PRIMARY KEY,
    customer_id  TEXT NOT NULL CHECK (customer_id GLOB 'cus_*'),
    kind         TEXT NOT NULL CHECK (kind IN ('subscription', 'booking_fee', 'credit_adjustment')),
    amount       INTEGER NOT NULL,
    currency     TEXT NOT NULL CHECK (currency GLOB '[a-z][a-z][a-z]'),
    occurred_at  TEXT NOT NULL,
    invoice_id   TEXT CHECK (invoice_id GLOB 'in_*'),
    description  TEXT,
    external_id  TEXT UNIQUE,
    created_at   TEXT NOT NULL,
    CHECK (amount >= 0 OR kind = 'credit_adjustment')
);

CREATE TABLE IF NOT EXISTS billing_dunning_events (
    id                   INTEGER PRIMARY KEY,
    invoice_id           TEXT NOT NULL,
    customer_id          TEXT NOT NULL,
    alert_id             INTEGER REFERENCES billing_alerts (id) ON DELETE SET NULL,
    day                  INTEGER NOT NULL CHECK (day >= 0),
    channel              TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    template             TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'scheduled'
                         CHECK (status IN ('scheduled', 'sending', 'sent', 'skipped', 'canceled',
                                           'failed', 'needs_review')),
    due_at               TEXT NOT NULL,
    claimed_at           TEXT,
    lease_expires_at     TEXT,
    claimed_by           TEXT,
    sent_at              TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    reason               TEXT,
    provider_message_id  TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    UNIQUE (invoice_id, day, channel)
);

CREATE TABLE IF NOT EXISTS billing_audit_log (
    id               INTEGER PRIMARY KEY,
    occurred_at      TEXT NOT NULL,
    actor            TEXT NOT NULL,
    action           TEXT NOT NULL,
    target           TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    idempotency_key  TEXT,
    details          TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS billing_usage_ledger_occurred_idx
    ON billing_usage_ledger (occurred_at, customer_id, currency, amount, kind);
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
