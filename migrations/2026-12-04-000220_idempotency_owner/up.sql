-- The user a stored Idempotency-Key answer belongs to, so erasing the account erases its
-- answers with it (issue #13: a support request's body stayed replayable for 24 h). Every
-- answer stored from now on names its user (anonymous callers are never stored); rows from
-- before have none and expire with the retention (24 h by default).
ALTER TABLE idempotency_keys ADD COLUMN user_id uuid REFERENCES users (id) ON DELETE CASCADE;
CREATE INDEX idempotency_keys_user_idx ON idempotency_keys (user_id);
