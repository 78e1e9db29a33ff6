-- cloudgreet-billing schema, version 4: dunning reaches the customers the invoice names.
-- Needs first: 0003_quarantined_events.sql (version 3). Run in version order, not name order.
--
-- billing_invoices keeps the contact details Stripe copies onto an invoice when it is
-- finalized (customer_email, customer_phone, customer_name) and when that happened
-- (status_transitions.finalized_at), so that a webhook fed invoice events alone still
-- knows whom to remind. Rows mirrored before this version get them from their raw JSON.
--
-- billing_dunning_events.confirmed_at: when the run holding a step last confirmed it, the
-- moment before its message is handed to a provider. A step left in needs_review with it
-- set may have reached the customer; without it, it never left. Steps already waiting
-- mid-send, with an attempt counted, are assumed confirmed: the safe guess.
--
-- billing_alerts takes a new type, dunning_undeliverable: an unpaid invoice whose due
-- reminder no channel could deliver.
--
-- Runs cleanly any number of times: the copies from raw JSON happen once, before version
-- 4 is recorded.

BEGIN;

ALTER TABLE billing_invoices
    ADD COLUMN IF NOT EXISTS customer_email text,
    ADD COLUMN IF NOT EXISTS customer_phone text,
    ADD COLUMN IF NOT EXISTS customer_name text,
    ADD COLUMN IF NOT EXISTS finalized_at timestamptz;

ALTER TABLE billing_dunning_events ADD COLUMN IF NOT EXISTS confirmed_at timestamptz;

UPDATE billing_invoices SET
    customer_email = CASE WHEN jsonb_typeof(raw -> 'customer_email') = 'string'
                          THEN raw ->> 'customer_email' END,
    customer_phone = CASE WHEN jsonb_typeof(raw -> 'customer_phone') = 'string'
                          THEN raw ->> 'customer_phone' END,
    customer_name = CASE WHEN jsonb_typeof(raw -> 'customer_name') = 'string'
                         THEN raw ->> 'customer_name' END,
    finalized_at = CASE WHEN jsonb_typeof(raw -> 'status_transitions' -> 'finalized_at') = 'number'
                        THEN to_timestamp((raw -> 'status_transitions' ->> 'finalized_at')::numeric)
                        END
WHERE NOT EXISTS (SELECT 1 FROM billing_schema_version WHERE version = 4);

UPDATE billing_dunning_events SET confirmed_at = updated_at
WHERE status IN ('sending', 'needs_review') AND attempts > 0 AND confirmed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM billing_schema_version WHERE version = 4);

ALTER TABLE billing_alerts DROP CONSTRAINT IF EXISTS billing_alerts_type_check;
ALTER TABLE billing_alerts ADD CONSTRAINT billing_alerts_type_check
    CHECK (type IN ('invoice_failed', 'payment_action_required', 'threshold_exceeded',
                    'dunning_exhausted', 'dunning_undeliverable'));

INSERT INTO billing_schema_version (version, name)
VALUES (4, '0004_dunning_contacts')
ON CONFLICT (version) DO NOTHING;

COMMIT;
