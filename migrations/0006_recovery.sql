-- cloudgreet-billing schema, version 6: what revenue recovery needs to know.
-- Needs first: 0005_merge_keys.sql (version 5). Run in version order, not name order.
--
-- billing_invoices, beside the last failure's code and message (version 5 decides which
-- failure that is: the highest attempt):
-- * last_decline_code: Stripe's decline_code of that failure (insufficient_funds,
--   stolen_card, ...), which says whether retrying can succeed; last_failure_code holds
--   the error code (card_declined) and is not enough.
-- * last_advice_code: the issuer's advice_code on that failure (try_again_later,
--   do_not_try_again, confirm_card_data), when Stripe gives one.
-- * last_failure_payment_method: the payment method (pm_, card_ or src_) that failed, so
--   retry can tell whether the customer has changed cards since.
--
-- billing_customers.default_payment_method: the customer's
-- invoice_settings.default_payment_method, the card the next charge would use.
--
-- billing_dunning_exemptions: customers dunning must not remind (a payment plan, a VIP),
-- one row per customer while exempt, with who exempted them and why. Unexempting deletes
-- the row; the audit log keeps the history.
--
-- Runs cleanly any number of times.

BEGIN;

ALTER TABLE billing_invoices
    ADD COLUMN IF NOT EXISTS last_decline_code text,
    ADD COLUMN IF NOT EXISTS last_advice_code text,
    ADD COLUMN IF NOT EXISTS last_failure_payment_method text;

ALTER TABLE billing_customers ADD COLUMN IF NOT EXISTS default_payment_method text;

CREATE TABLE IF NOT EXISTS billing_dunning_exemptions (
    customer_id  text PRIMARY KEY CHECK (customer_id LIKE 'cus\_%'),
    reason       text NOT NULL CHECK (reason <> ''),
    actor        text NOT NULL,
    created_at   timestamptz NOT NULL
);

-- Row-level security with no policies, like every billing table (see version 1).
ALTER TABLE billing_dunning_exemptions ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON billing_dunning_exemptions FROM %I', api_role);
        END IF;
    END LOOP;
END
$$;

INSERT INTO billing_schema_version (version, name)
VALUES (6, '0006_recovery')
ON CONFLICT (version) DO NOTHING;

COMMIT;
