-- Keys for integrators: shown once, stored as SHA-256 hashes.
CREATE TABLE api_keys (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                text NOT NULL,
    -- The first characters of the key (`gi2_` + 8), to recognise it in lists.
    prefix              text NOT NULL,
    key_hash            bytea NOT NULL UNIQUE,
    expires_at          timestamptz,
    daily_credit_limit  bigint CHECK (daily_credit_limit IS NULL OR daily_credit_limit > 0),
    last_used_at        timestamptz,
    revoked_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at DESC);
