DROP INDEX jobs_one_retention_sweep;
DROP INDEX jobs_finished_idx;
DROP INDEX activity_events_created_idx;
