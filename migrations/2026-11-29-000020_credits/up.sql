-- Credits: grants (what a user was given), holds (reserved for work in progress) and an
-- append-only ledger. Every change writes its ledger entry in the same transaction.

-- One row per user, locked by every credit operation: concurrent spends serialise here.
CREATE TABLE credit_accounts (
    user_id              uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- Credits free to spend (unspent, unexpired, unreserved).
    available            bigint NOT NULL DEFAULT 0 CHECK (available >= 0),
    -- Credits reserved by open holds.
    held                 bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- The low-balance mail went out and the balance has not recovered since.
    low_balance_notified boolean NOT NULL DEFAULT false,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE credit_grants (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source        text NOT NULL CHECK (source IN ('purchase', 'subscription', 'promotion', 'admin', 'refund_reversal')),
    amount        bigint NOT NULL CHECK (amount > 0),
    -- Not yet spent, reserved or expired.
    remaining     bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    expires_at    timestamptz,
    expired_at    timestamptz,
    -- What paid for it (a billing transaction id, a provider reference), for refunds.
    reference     text,
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_grants_spendable_idx ON credit_grants (user_id, expires_at NULLS LAST, created_at) WHERE remaining > 0;
CREATE INDEX credit_grants_reference_idx ON credit_grants (reference) WHERE reference IS NOT NULL;
CREATE INDEX credit_grants_expiry_idx ON credit_grants (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;

CREATE TABLE credit_holds (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount        bigint NOT NULL CHECK (amount > 0),
    status        text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'captured', 'released')),
    captured      bigint NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    -- What it pays for (a generation id), and the API key that spent it, for daily limits.
    reference     text,
    api_key_id    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    settled_at    timestamptz
);
CREATE INDEX credit_holds_user_idx ON credit_holds (user_id, created_at);
CREATE INDEX credit_holds_api_key_idx ON credit_holds (api_key_id, created_at) WHERE api_key_id IS NOT NULL;

-- Which grants a hold drew from, so a release puts credits back where they came from.
CREATE TABLE credit_hold_allocations (
    hold_id       uuid NOT NULL REFERENCES credit_holds (id) ON DELETE CASCADE,
    grant_id      uuid NOT NULL REFERENCES credit_grants (id) ON DELETE CASCADE,
    amount        bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (hold_id, grant_id)
);

CREATE TABLE ledger_entries (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('grant', 'hold', 'capture', 'release', 'expiry', 'refund', 'adjustment')),
    -- Change to `available` and to `held`: their sums are the account's balances.
    available_delta bigint NOT NULL,
    held_delta      bigint NOT NULL,
    grant_id        uuid REFERENCES credit_grants (id) ON DELETE SET NULL,
    hold_id         uuid REFERENCES credit_holds (id) ON DELETE SET NULL,
    description     text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_user_idx ON ledger_entries (user_id, id DESC);
