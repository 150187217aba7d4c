DROP INDEX idempotency_keys_user_idx;
ALTER TABLE idempotency_keys DROP COLUMN user_id;
