-- Low-balance notices are not strictly necessary: users can turn them off (one-click
-- unsubscribe from the mail, or PATCH /v1/me).
ALTER TABLE users ADD COLUMN low_balance_emails boolean NOT NULL DEFAULT true;
