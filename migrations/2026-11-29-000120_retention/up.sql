-- Retention sweeps delete by age across all users.
CREATE INDEX activity_events_created_idx ON activity_events (created_at);
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- At most one retention sweep queued or running, however many processes schedule it.
CREATE UNIQUE INDEX jobs_one_retention_sweep ON jobs (kind)
    WHERE kind = 'retention_sweep' AND status IN ('queued', 'running');
