DELETE FROM ledger_entries WHERE kind = 'debt';
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('grant', 'hold', 'capture', 'release', 'expiry', 'refund', 'adjustment'));
ALTER TABLE ledger_entries DROP COLUMN debt_delta;
ALTER TABLE credit_accounts DROP COLUMN debt;
ALTER TABLE credit_grants DROP COLUMN refunded_held;
