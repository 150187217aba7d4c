-- The plan level each paid subscription period was granted at: a period is granted in full
-- once, and a mid-period upgrade only adds the pro-rata difference above this level, so a
-- plan-change loop can never grant a period twice. Keyed by the period's end, which both
-- Stripe (every line of the period, prorations included) and Creem state. Ids only.
CREATE TABLE plan_periods (
    provider        text NOT NULL CHECK (provider IN ('stripe', 'creem')),
    subscription_id text NOT NULL,
    period_end      timestamptz NOT NULL,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The plan whose monthly credits this period has been granted up to (0: none yet).
    plan_id         text NOT NULL,
    credits         bigint NOT NULL CHECK (credits >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, subscription_id, period_end)
);
CREATE INDEX plan_periods_user_idx ON plan_periods (user_id);
