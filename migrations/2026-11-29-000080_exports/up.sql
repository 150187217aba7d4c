-- Personal-data exports: a ZIP in the object store, downloadable for 7 days.
CREATE TABLE exports (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress     integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    -- Set once the job starts writing; the object may be partial until `succeeded`.
    object_key   text,
    bytes        bigint,
    error        text,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX exports_user_idx ON exports (user_id, id DESC);
-- At most one export in progress per user.
CREATE UNIQUE INDEX exports_one_active_per_user ON exports (user_id) WHERE status IN ('queued', 'running');
CREATE INDEX exports_expiry_idx ON exports (expires_at) WHERE expires_at IS NOT NULL;
