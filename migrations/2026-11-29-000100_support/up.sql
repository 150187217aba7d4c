-- What users sent to support; shown back to them and included in their data export.
CREATE TABLE support_requests (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subject     text NOT NULL,
    message     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX support_requests_user_idx ON support_requests (user_id, id DESC);

-- One row per user and policy version mailed: a re-run of the notice skips these users.
CREATE TABLE policy_notices (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    version    text NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, version)
);
