-- The hashed names mean nothing to the older code: its windows start afresh.
DELETE FROM rate_limits;
DROP INDEX rate_limits_subject_idx;
ALTER TABLE rate_limits DROP COLUMN subject;
