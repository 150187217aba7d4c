-- Google / GitHub sign-ins linked to an account.
CREATE TABLE identities (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider            text NOT NULL CHECK (provider IN ('google', 'github')),
    -- The provider's stable user id (OIDC `sub`, GitHub numeric id).
    subject             text NOT NULL,
    email               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_used_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, subject),
    UNIQUE (user_id, provider)
);

-- Pending authorization requests: the state (hashed) and PKCE verifier, kept ten minutes.
CREATE TABLE oauth_states (
    state_hash          bytea PRIMARY KEY,
    provider            text NOT NULL,
    pkce_verifier       text NOT NULL,
    redirect_to         text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL
);
