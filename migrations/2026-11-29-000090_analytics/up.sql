-- Product-analytics events, written only while the user's current analytics consent is on.
-- No user id, no foreign key to users, no IP/email/user agent: `subject` is a keyed
-- pseudonym of the user id (api/src/analytics.rs), so the rows are not personal data
-- once the account (the only link back) is gone.
CREATE TABLE analytics_events (
    id                  uuid PRIMARY KEY,
    subject             uuid NOT NULL,
    event               text NOT NULL,
    properties          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- Operators read it by day and event (`gptimage2 admin analytics`).
CREATE INDEX analytics_events_created_idx ON analytics_events (created_at, event);
