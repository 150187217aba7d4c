-- Credits of a refunded grant that running generations still hold when the refund arrives:
-- a later release of those holds returns them to nothing instead of to the grant.
ALTER TABLE credit_grants
    ADD COLUMN refunded_held bigint NOT NULL DEFAULT 0 CHECK (refunded_held >= 0);
