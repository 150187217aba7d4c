-- Idempotency-Key records: the first answer to a creating POST, replayed for 24 h.
-- Only hashes identify the caller (SHA-256 of the Authorization value, method and path) and
-- the request (SHA-256 of method, path+query and body); rows expire through maintenance.

CREATE TABLE idempotency_keys (
    scope_hash        bytea NOT NULL CHECK (octet_length(scope_hash) = 32),
    key               text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash      bytea NOT NULL CHECK (octet_length(request_hash) = 32),
    status            text NOT NULL DEFAULT 'in_progress'
                      CHECK (status IN ('in_progress', 'completed')),
    response_status   integer CHECK (response_status BETWEEN 100 AND 499),
    -- Only Content-Type and Location, by lower-case name.
    response_headers  jsonb,
    response_body     bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    PRIMARY KEY (scope_hash, key),
    CHECK ((status = 'completed') = (response_status IS NOT NULL AND completed_at IS NOT NULL))
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
