-- cloudgreet-billing schema, version 5: the keys that make the order of events not matter.
-- Needs first: 0004_dunning_contacts.sql (version 4). Run in version order, not name order.
--
-- Each mirrored row remembers which observation it shows, so that the same Stripe events
-- give the same state in any order (the rules: cloudgreet_billing/domain/merge.py and the
-- README, "Events in any order"):
--
-- * merge_event_id (invoices, subscriptions, customers): the event whose object the row
--   shows ('' for a listing); merge_attempt: that object's own attempt_count (the column
--   attempt_count keeps the highest seen).
-- * last_failure_attempt, last_failure_at, last_failure_event_id: the failure the last
--   failure's code and message come from.
-- * settled_at, settled_event_id, settled_resolution: the earliest event that settled
--   the invoice, and the resolution its alerts and canceled steps say.
-- * billing_alerts.stripe_event_created: when the event an alert's content comes from was
--   created.
--
-- Event ids compare byte by byte (COLLATE "C"), as SQLite compares them. Rows mirrored
-- earlier get keys from what they hold (their attempt count, the event of their alert).
-- Runs cleanly any number of times: the copies happen once, before version 5 is recorded.

BEGIN;

ALTER TABLE billing_invoices
    ADD COLUMN IF NOT EXISTS merge_attempt integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS merge_event_id text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS last_failure_attempt integer,
    ADD COLUMN IF NOT EXISTS last_failure_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_failure_event_id text COLLATE "C",
    ADD COLUMN IF NOT EXISTS settled_at timestamptz,
    ADD COLUMN IF NOT EXISTS settled_event_id text COLLATE "C",
    ADD COLUMN IF NOT EXISTS settled_resolution text;

ALTER TABLE billing_subscriptions
    ADD COLUMN IF NOT EXISTS merge_event_id text COLLATE "C" NOT NULL DEFAULT '';

ALTER TABLE billing_customers
    ADD COLUMN IF NOT EXISTS merge_event_id text COLLATE "C" NOT NULL DEFAULT '';

ALTER TABLE billing_alerts ADD COLUMN IF NOT EXISTS stripe_event_created timestamptz;
ALTER TABLE billing_alerts ALTER COLUMN stripe_event_id TYPE text COLLATE "C";

UPDATE billing_invoices SET
    merge_attempt = attempt_count,
    last_failure_attempt = CASE WHEN last_failure_message IS NOT NULL THEN attempt_count END,
    last_failure_at = CASE WHEN last_failure_message IS NOT NULL THEN stripe_updated_at END,
    last_failure_event_id = CASE WHEN last_failure_message IS NOT NULL THEN '' END
WHERE NOT EXISTS (SELECT 1 FROM billing_schema_version WHERE version = 5);

UPDATE billing_alerts a SET stripe_event_created = e.stripe_created
FROM billing_stripe_events e
WHERE e.id = a.stripe_event_id AND a.stripe_event_created IS NULL
  AND NOT EXISTS (SELECT 1 FROM billing_schema_version WHERE version = 5);

INSERT INTO billing_schema_version (version, name)
VALUES (5, '0005_merge_keys')
ON CONFLICT (version) DO NOTHING;

COMMIT;
