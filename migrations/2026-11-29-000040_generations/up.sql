-- Generations: prompts and parameters kept per user, their images, and reference images.

CREATE TABLE reference_images (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    object_key    text NOT NULL UNIQUE,
    content_type  text NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg', 'image/webp')),
    width         integer NOT NULL CHECK (width > 0),
    height        integer NOT NULL CHECK (height > 0),
    bytes         bigint NOT NULL CHECK (bytes > 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reference_images_user_idx ON reference_images (user_id, id DESC);

CREATE TABLE generations (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    prompt          text NOT NULL,
    -- Every request parameter as submitted (size, quality, n, background, format, ...).
    params          jsonb NOT NULL,
    provider        text NOT NULL,
    cost_credits    bigint NOT NULL CHECK (cost_credits >= 0),
    hold_id         uuid REFERENCES credit_holds (id) ON DELETE SET NULL,
    job_id          uuid,
    api_key_id      uuid,
    error_code      text,
    error_message   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX generations_user_idx ON generations (user_id, id DESC);
CREATE INDEX generations_user_status_idx ON generations (user_id, status, id DESC);

CREATE TABLE generation_images (
    id              uuid PRIMARY KEY,
    generation_id   uuid NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position        integer NOT NULL,
    object_key      text NOT NULL UNIQUE,
    format          text NOT NULL CHECK (format IN ('png', 'jpeg', 'webp')),
    width           integer NOT NULL,
    height          integer NOT NULL,
    bytes           bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (generation_id, position)
);
CREATE INDEX generation_images_user_idx ON generation_images (user_id);
