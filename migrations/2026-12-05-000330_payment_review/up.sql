-- A payment whose provider customer is already linked to another account: recorded for the
-- buyer our own checkout reference names (credits granted), and flagged for an operator.
ALTER TABLE billing_transactions DROP CONSTRAINT billing_transactions_flag_check;
ALTER TABLE billing_transactions ADD CONSTRAINT billing_transactions_flag_check
    CHECK (flag IN ('amount_mismatch', 'currency_mismatch', 'unknown_product', 'customer_conflict'));
-- A signed event that can never be applied (a permanent condition): recorded with the reason
-- and acknowledged, so the provider stops retrying and an operator can look at it.
ALTER TABLE webhook_events ADD COLUMN needs_attention text;
CREATE INDEX webhook_events_needs_attention_idx ON webhook_events (received_at DESC)
    WHERE needs_attention IS NOT NULL;
