-- Credits of a refunded grant that running generations still hold when the refund arrives:
-- a later release of those holds returns them to nothing instead of to the grant.
ALTER TABLE credit_grants
    ADD COLUMN refunded_held bigint NOT NULL DEFAULT 0 CHECK (refunded_held >= 0);

-- Credits a refund could not take back because they were spent: owed, and settled first by
-- the next grant. `debt_delta` sums to the account's debt, as the other deltas do.
ALTER TABLE credit_accounts ADD COLUMN debt bigint NOT NULL DEFAULT 0 CHECK (debt >= 0);
ALTER TABLE ledger_entries ADD COLUMN debt_delta bigint NOT NULL DEFAULT 0;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('grant', 'hold', 'capture', 'release', 'expiry', 'refund', 'debt', 'adjustment'));
