-- The job queue: claimed with FOR UPDATE SKIP LOCKED under a renewable lease.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL DEFAULT now(),
    locked_by        text,
    lease_expires_at timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL))
);

CREATE INDEX jobs_ready_idx ON jobs (run_at) WHERE status = 'queued';
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_kind_status_idx ON jobs (kind, status);

-- Wakes idle workers when a job becomes ready; delivered at commit, so a job enqueued
-- inside a transaction is announced only once it exists.
CREATE FUNCTION jobs_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('gi2_jobs', NEW.kind);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_notify_ready
    AFTER INSERT OR UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION jobs_notify();
