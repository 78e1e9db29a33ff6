-- Version 2 for SQLite, the equivalent of migrations/0002_ledger_external_key.sql: the
-- ledger's external_id key becomes the named unique index
-- billing_usage_ledger_external_key. A column's UNIQUE cannot be dropped; an index can,
-- which lets a bulk import load without the key and sort-build it after (SqliteStore).
--
-- SQLite cannot drop a column constraint in place, so the table is rebuilt by its
-- documented procedure (create, copy, drop, rename), keeping every id. Dropping the old
-- table drops its indexes; they are created again below under the same names.

CREATE TABLE billing_usage_ledger_v2 (
    id           INTEGER PRIMARY KEY,
    customer_id  TEXT NOT NULL CHECK (customer_id GLOB 'cus_*'),
    kind         TEXT NOT NULL CHECK (kind IN ('subscription', 'booking_fee', 'credit_adjustment')),
    amount       INTEGER NOT NULL,
    currency     TEXT NOT NULL CHECK (currency GLOB '[a-z][a-z][a-z]'),
    occurred_at  TEXT NOT NULL,
    invoice_id   TEXT CHECK (invoice_id GLOB 'in_*'),
    description  TEXT,
    external_id  TEXT,
    created_at   TEXT NOT NULL,
    CHECK (amount >= 0 OR kind = 'credit_adjustment')
);

INSERT INTO billing_usage_ledger_v2 (
    id, customer_id, kind, amount, currency, occurred_at, invoice_id, description,
    external_id, created_at
)
SELECT
    id, customer_id, kind, amount, currency, occurred_at, invoice_id, description,
    external_id, created_at
FROM billing_usage_ledger;

DROP TABLE billing_usage_ledger;

ALTER TABLE billing_usage_ledger_v2 RENAME TO billing_usage_ledger;

CREATE UNIQUE INDEX billing_usage_ledger_external_key
    ON billing_usage_ledger (external_id);
CREATE INDEX billing_usage_ledger_occurred_idx
    ON billing_usage_ledger (occurred_at, customer_id, currency, amount, kind);
CREATE INDEX billing_usage_ledger_customer_idx
    ON billing_usage_ledger (customer_id, occurred_at);
CREATE INDEX billing_usage_ledger_invoice_idx
    ON billing_usage_ledger (invoice_id) WHERE invoice_id IS NOT NULL;
