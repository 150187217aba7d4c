DROP TRIGGER jobs_notify_ready ON jobs;
DROP FUNCTION jobs_notify();
DROP TABLE jobs;
