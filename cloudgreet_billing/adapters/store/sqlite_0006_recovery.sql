-- Version 6 for SQLite, the equivalent of migrations/0006_recovery.sql: the last
-- failure's decline code, advice code and payment method, the customer's default payment
-- method, and the customers dunning must not remind.

ALTER TABLE billing_invoices ADD COLUMN last_decline_code TEXT;
ALTER TABLE billing_invoices ADD COLUMN last_advice_code TEXT;
ALTER TABLE billing_invoices ADD COLUMN last_failure_payment_method TEXT;

ALTER TABLE billing_customers ADD COLUMN default_payment_method TEXT;

CREATE TABLE IF NOT EXISTS billing_dunning_exemptions (
    customer_id  TEXT PRIMARY KEY CHECK (customer_id GLOB 'cus_*'),
    reason       TEXT NOT NULL CHECK (reason <> ''),
    actor        TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
