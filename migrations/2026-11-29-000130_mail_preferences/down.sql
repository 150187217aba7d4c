ALTER TABLE users DROP COLUMN low_balance_emails;
