DROP INDEX billing_transactions_flagged_idx;
ALTER TABLE billing_transactions DROP COLUMN flag;
