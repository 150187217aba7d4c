-- A payment that did not pay the catalog price of what it claims to buy (another amount or
-- currency, or a product not in the catalog): recorded with no credits and flagged, for an
-- operator to settle (refund it, or grant by hand).
ALTER TABLE billing_transactions
    ADD COLUMN flag text CHECK (flag IN ('amount_mismatch', 'currency_mismatch', 'unknown_product'));
CREATE INDEX billing_transactions_flagged_idx ON billing_transactions (created_at DESC) WHERE flag IS NOT NULL;
