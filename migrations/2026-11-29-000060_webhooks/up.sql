-- Outgoing generation webhooks: a signing secret per user and one row per delivery.

CREATE TABLE webhook_secrets (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- `whsec_` + base64 of 24 random bytes (Standard Webhooks).
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    generation_id   uuid NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url             text NOT NULL,
    event_type      text NOT NULL,
    -- The exact event body, signed anew on each attempt.
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    response_status integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_generation_idx ON webhook_deliveries (generation_id, id);
CREATE INDEX webhook_deliveries_user_idx ON webhook_deliveries (user_id);
