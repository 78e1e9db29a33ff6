-- cloudgreet-billing schema, version 3: quarantined Stripe events.
-- Needs first: 0002_ledger_external_key.sql (version 2). Run in version order, not name order.
--
-- An event that can never be applied as it is (a field of the wrong type, a value a
-- constraint refuses, JSON that cannot be read) is kept here with its reason and payload,
-- in the same transaction as the other events of its batch, so that it holds up none of
-- them. It waits for an operator: `quarantine retry` plans it again with the current code,
-- `quarantine dismiss` gives up on it. Rows are never deleted: the outcome is kept.
--
-- Runs cleanly any number of times.

BEGIN;

CREATE TABLE IF NOT EXISTS billing_quarantined_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- One row per event: its evt_ id, or for an event without a usable id the sha256 of
    -- its payload, so a redelivery updates the row instead of adding one.
    dedupe_key      text NOT NULL UNIQUE,
    event_id        text CHECK (event_id LIKE 'evt\_%'),
    type            text,
    stripe_created  timestamptz,
    livemode        boolean NOT NULL DEFAULT false,
    source          text NOT NULL CHECK (source IN ('api', 'webhook', 'file', 'backfill')),
    reason          text NOT NULL,
    -- The event as JSON text (ASCII, as received but re-encoded); for an event whose JSON
    -- could not be read, that text as a JSON string. Text, not jsonb: jsonb refuses some
    -- of what makes an event bad (\u0000, nesting past its stack depth).
    payload         text NOT NULL,
    status          text NOT NULL DEFAULT 'quarantined'
                    CHECK (status IN ('quarantined', 'applied', 'dismissed')),
    times_seen      integer NOT NULL DEFAULT 1,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolved_by     text,
    resolution      text,
    CHECK ((status = 'quarantined') = (resolved_at IS NULL))
);

CREATE INDEX IF NOT EXISTS billing_quarantined_events_open_idx
    ON billing_quarantined_events (first_seen_at) WHERE status = 'quarantined';
CREATE INDEX IF NOT EXISTS billing_quarantined_events_event_idx
    ON billing_quarantined_events (event_id);

-- Row-level security with no policies, like every billing table (see version 1).
ALTER TABLE billing_quarantined_events ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON billing_quarantined_events FROM %I', api_role);
            EXECUTE format(
                'REVOKE ALL ON SEQUENCE billing_quarantined_events_id_seq FROM %I', api_role);
        END IF;
    END LOOP;
END
$$;

INSERT INTO billing_schema_version (version, name)
VALUES (3, '0003_quarantined_events')
ON CONFLICT (version) DO NOTHING;

COMMIT;
