DROP INDEX webhook_events_needs_attention_idx;
ALTER TABLE webhook_events DROP COLUMN needs_attention;
UPDATE billing_transactions SET flag = NULL WHERE flag = 'customer_conflict';
ALTER TABLE billing_transactions DROP CONSTRAINT billing_transactions_flag_check;
ALTER TABLE billing_transactions ADD CONSTRAINT billing_transactions_flag_check
    CHECK (flag IN ('amount_mismatch', 'currency_mismatch', 'unknown_product'));
