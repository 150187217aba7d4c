ALTER TABLE credit_grants DROP COLUMN refunded_held;
