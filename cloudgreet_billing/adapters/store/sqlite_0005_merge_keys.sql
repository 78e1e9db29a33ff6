-- Version 5 for SQLite, the equivalent of migrations/0005_merge_keys.sql: the keys that
-- make the order of events not matter (cloudgreet_billing/domain/merge.py). SQLite
-- compares text byte by byte already, as PostgreSQL does with COLLATE "C".

ALTER TABLE billing_invoices ADD COLUMN merge_attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE billing_invoices ADD COLUMN merge_event_id TEXT NOT NULL DEFAULT '';
ALTER TABLE billing_invoices ADD COLUMN last_failure_attempt INTEGER;
ALTER TABLE billing_invoices ADD COLUMN last_failure_at TEXT;
ALTER TABLE billing_invoices ADD COLUMN last_failure_event_id TEXT;
ALTER TABLE billing_invoices ADD COLUMN settled_at TEXT;
ALTER TABLE billing_invoices ADD COLUMN settled_event_id TEXT;
ALTER TABLE billing_invoices ADD COLUMN settled_resolution TEXT;

ALTER TABLE billing_subscriptions ADD COLUMN merge_event_id TEXT NOT NULL DEFAULT '';

ALTER TABLE billing_customers ADD COLUMN merge_event_id TEXT NOT NULL DEFAULT '';

ALTER TABLE billing_alerts ADD COLUMN stripe_event_created TEXT;

UPDATE billing_invoices SET
    merge_attempt = attempt_count,
    last_failure_attempt = CASE WHEN last_failure_message IS NOT NULL THEN attempt_count END,
    last_failure_at = CASE WHEN last_failure_message IS NOT NULL THEN stripe_updated_at END,
    last_failure_event_id = CASE WHEN last_failure_message IS NOT NULL THEN '' END;

UPDATE billing_alerts SET stripe_event_created = (
    SELECT e.stripe_created FROM billing_stripe_events e WHERE e.id = billing_alerts.stripe_event_id
)
WHERE stripe_event_created IS NULL;
