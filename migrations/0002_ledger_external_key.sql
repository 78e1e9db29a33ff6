-- cloudgreet-billing schema, version 2.
-- Needs first: CREATE_BILLING_INFRASTRUCTURE.sql (version 1), which creates
-- billing_usage_ledger. Run in version order, not name order.
--
-- The ledger's external_id key is the named unique index billing_usage_ledger_external_key,
-- on PostgreSQL as on SQLite (where the store drops the index around a bulk import and
-- sort-builds it after). Imports still insert with ON CONFLICT (external_id) DO NOTHING,
-- which the index serves as the constraint did.
--
-- Runs cleanly any number of times. The index is built before the constraint goes, in
-- one transaction, so external_id is never without its key.

BEGIN;

CREATE UNIQUE INDEX IF NOT EXISTS billing_usage_ledger_external_key
    ON billing_usage_ledger (external_id);
ALTER TABLE billing_usage_ledger DROP CONSTRAINT IF EXISTS billing_usage_ledger_external_id_key;

INSERT INTO billing_schema_version (version, name)
VALUES (2, '0002_ledger_external_key')
ON CONFLICT (version) DO NOTHING;

COMMIT;
