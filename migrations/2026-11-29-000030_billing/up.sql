-- Payments through Stripe and Creem. No card data ever reaches this database.

-- The user's customer record at each provider, created once and reused.
CREATE TABLE billing_customers (
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider      text NOT NULL CHECK (provider IN ('stripe', 'creem')),
    customer_id   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, provider),
    UNIQUE (provider, customer_id)
);

CREATE TABLE subscriptions (
    id                        uuid PRIMARY KEY,
    user_id                   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider                  text NOT NULL CHECK (provider IN ('stripe', 'creem')),
    provider_subscription_id  text NOT NULL,
    plan_id                   text NOT NULL,
    status                    text NOT NULL,
    current_period_end        timestamptz,
    cancel_at_period_end      boolean NOT NULL DEFAULT false,
    -- The provider's time of the state we hold: an older event never overwrites a newer one.
    provider_updated_at       timestamptz NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_subscription_id)
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id, updated_at DESC);

-- Purchases, renewals and refunds. Kept for bookkeeping after an account is erased: then
-- user_id becomes NULL and only the anonymous id remains.
CREATE TABLE billing_transactions (
    id                  uuid PRIMARY KEY,
    user_id             uuid REFERENCES users (id) ON DELETE SET NULL,
    anonymous_user_id   uuid NOT NULL,
    provider            text NOT NULL CHECK (provider IN ('stripe', 'creem')),
    kind                text NOT NULL CHECK (kind IN ('purchase', 'renewal', 'refund')),
    -- The provider's id of the payment (checkout session, invoice, order, refund).
    provider_reference  text NOT NULL,
    item_id             text,
    amount_cents        bigint NOT NULL,
    currency            text NOT NULL,
    credits             bigint NOT NULL DEFAULT 0,
    -- For refunds: the purchase refunded, and credits that could not be taken back.
    refunded_transaction_id uuid REFERENCES billing_transactions (id),
    credits_lost        bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, kind, provider_reference)
);
CREATE INDEX billing_transactions_user_idx ON billing_transactions (user_id, id DESC);

-- Every webhook event applied, recorded in the transaction of its effect: a replay is a no-op.
CREATE TABLE webhook_events (
    provider      text NOT NULL,
    event_id      text NOT NULL,
    event_type    text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
