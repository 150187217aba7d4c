-- Accounts, sign-in and everything a user can see about their own security.

CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    email               text NOT NULL,
    -- Lower-cased, trimmed: uniqueness is case-insensitive.
    email_normalized    text NOT NULL UNIQUE,
    name                text NOT NULL,
    avatar_url          text,
    -- argon2id PHC string; NULL for accounts that only sign in with Google/GitHub.
    password_hash       text,
    email_verified_at   timestamptz,
    terms_version       text,
    terms_accepted_at   timestamptz,
    -- Set when deletion starts: sign-in is refused from then on.
    disabled_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- A session is one sign-in on one device: the family of refresh tokens rotated from it.
CREATE TABLE sessions (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client              text NOT NULL CHECK (client IN ('web', 'mobile')),
    auth_method         text NOT NULL CHECK (auth_method IN ('password', 'google', 'github')),
    ip                  text,
    user_agent          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_used_at        timestamptz NOT NULL DEFAULT now(),
    last_ip             text,
    last_user_agent     text,
    expires_at          timestamptz NOT NULL,
    revoked_at          timestamptz,
    revoked_reason      text
);
CREATE INDEX sessions_user_idx ON sessions (user_id, created_at DESC);

-- Refresh tokens are stored only as SHA-256 hashes; a used one must never come back.
CREATE TABLE refresh_tokens (
    id                  uuid PRIMARY KEY,
    session_id          uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash          bytea NOT NULL UNIQUE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    rotated_at          timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- Single-use tokens mailed to the user (verification, password reset).
CREATE TABLE email_tokens (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose             text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    token_hash          bytea NOT NULL UNIQUE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    used_at             timestamptz
);
CREATE INDEX email_tokens_user_idx ON email_tokens (user_id, purpose);

-- The security log users see at /v1/me/activity.
CREATE TABLE activity_events (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind                text NOT NULL,
    ip                  text,
    user_agent          text,
    details             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activity_events_user_idx ON activity_events (user_id, created_at DESC, id DESC);

-- Append-only consent history; the newest row is the current choice.
CREATE TABLE consents (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    analytics           boolean NOT NULL,
    marketing           boolean NOT NULL,
    policy_version      text NOT NULL,
    ip                  text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consents_user_idx ON consents (user_id, created_at DESC, id DESC);

-- Fixed-window counters shared by every process (register, login, refresh, ...).
CREATE TABLE rate_limits (
    key                 text PRIMARY KEY,
    window_start        timestamptz NOT NULL,
    count               integer NOT NULL
);
