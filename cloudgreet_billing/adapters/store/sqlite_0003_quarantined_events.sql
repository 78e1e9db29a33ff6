-- Version 3 for SQLite, the equivalent of migrations/0003_quarantined_events.sql: Stripe
-- events that cannot be applied, kept with their reason and payload for an operator.

CREATE TABLE IF NOT EXISTS billing_quarantined_events (
    id              INTEGER PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,
    event_id        TEXT CHECK (event_id GLOB 'evt_*'),
    type            TEXT,
    stripe_created  TEXT,
    livemode        INTEGER NOT NULL DEFAULT 0,
    source          TEXT NOT NULL CHECK (source IN ('api', 'webhook', 'file', 'backfill')),
    reason          TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'quarantined'
                    CHECK (status IN ('quarantined', 'applied', 'dismissed')),
    times_seen      INTEGER NOT NULL DEFAULT 1,
    first_seen_at   TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    resolved_at     TEXT,
    resolved_by     TEXT,
    resolution      TEXT,
    CHECK ((status = 'quarantined') = (resolved_at IS NULL))
);

CREATE INDEX IF NOT EXISTS billing_quarantined_events_open_idx
    ON billing_quarantined_events (first_seen_at) WHERE status = 'quarantined';
CREATE INDEX IF NOT EXISTS billing_quarantined_events_event_idx
    ON billing_quarantined_events (event_id);
