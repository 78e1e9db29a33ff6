-- Version 4 for SQLite, the equivalent of migrations/0004_dunning_contacts.sql: the
-- invoice's own contact details and finalization time, when a step was confirmed, and
-- the dunning_undeliverable alert type.
--
-- SQLite cannot change a CHECK in place, so billing_alerts is rebuilt by the documented
-- procedure (create, copy, drop, rename), keeping every id. The store runs migrations with
-- foreign keys off and checks them before committing, so dropping the old table neither
-- cascades to the alerts' notes nor clears the steps' alert ids; they point at the new
-- table, under the old name, once it is renamed. Its indexes are created again below.

ALTER TABLE billing_invoices ADD COLUMN customer_email TEXT;
ALTER TABLE billing_invoices ADD COLUMN customer_phone TEXT;
ALTER TABLE billing_invoices ADD COLUMN customer_name TEXT;
ALTER TABLE billing_invoices ADD COLUMN finalized_at TEXT;

ALTER TABLE billing_dunning_events ADD COLUMN confirmed_at TEXT;

UPDATE billing_invoices SET
    customer_email = CASE WHEN json_type(raw, '$.customer_email') = 'text'
                          THEN json_extract(raw, '$.customer_email') END,
    customer_phone = CASE WHEN json_type(raw, '$.customer_phone') = 'text'
                          THEN json_extract(raw, '$.customer_phone') END,
    customer_name = CASE WHEN json_type(raw, '$.customer_name') = 'text'
                         THEN json_extract(raw, '$.customer_name') END,
    finalized_at = CASE WHEN json_type(raw, '$.status_transitions.finalized_at') = 'integer'
                        THEN strftime('%Y-%m-%dT%H:%M:%S',
                                      json_extract(raw, '$.status_transitions.finalized_at'),
                                      'unixepoch') || '.000000Z'
                        END;

UPDATE billing_dunning_events SET confirmed_at = updated_at
WHERE status IN ('sending', 'needs_review') AND attempts > 0;

CREATE TABLE billing_alerts_v4 (
    id               INTEGER PRIMARY KEY,
    type             TEXT NOT NULL CHECK (type IN ('invoice_failed', 'payment_action_required',
                                                   'threshold_exceeded', 'dunning_exhausted',
                                                   'dunning_undeliverable')),
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

INSERT INTO billing_alerts_v4 (
    id, type, status, dedupe_key, customer_id, invoice_id, amount_due, currency,
    stripe_event_id, attempt_count, last_failure, details, created_at, updated_at,
    acknowledged_at, resolved_at, resolution
)
SELECT
    id, type, status, dedupe_key, customer_id, invoice_id, amount_due, currency,
    stripe_event_id, attempt_count, last_failure, details, created_at, updated_at,
    acknowledged_at, resolved_at, resolution
FROM billing_alerts;

DROP TABLE billing_alerts;

ALTER TABLE billing_alerts_v4 RENAME TO billing_alerts;

CREATE UNIQUE INDEX billing_alerts_unresolved_key
    ON billing_alerts (dedupe_key) WHERE status <> 'resolved';
CREATE INDEX billing_alerts_status_idx ON billing_alerts (status, created_at);
CREATE INDEX billing_alerts_invoice_idx ON billing_alerts (invoice_id);
CREATE INDEX billing_alerts_customer_idx ON billing_alerts (customer_id);
